"""The Lipschitz constant of a noise-prediction network in t, estimated as in the E-TSDM paper.

    K(t) = E_{x_0, eps} || eps_theta(x_t, c(t)) - eps_theta(x_t, c(t + dt)) ||_2 / dt,
    x_t  = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                                   (Yang et al. 2024)

The same x_t (built at the REAL t) enters both calls; c is the time condition the model is used with:
the identity for a plain model, the scheduler's ``condition_timesteps`` (E-TSDM's f) for an E-TSDM model.
The norm is the Euclidean norm over all pixels and channels of one example; E is the mean over examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["noisy_samples", "lipschitz_in_t"]


def noisy_samples(
    clean: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, t: int
) -> torch.Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, the DDPM forward process at integer timestep t."""
    alpha_bar = alphas_cumprod[t].to(clean.dtype)
    return alpha_bar.sqrt() * clean + (1.0 - alpha_bar).sqrt() * noise


@torch.no_grad()
def lipschitz_in_t(
    predict: Callable[[torch.Tensor, int], torch.Tensor],
    clean: torch.Tensor,
    noise: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    dt: int = 1,
    condition: Callable[[int], int] | None = None,
) -> list[float]:
    """K(t) for each t of ``timesteps`` (a list of floats, same order).

    Args:
        predict: ``predict(x_t, condition_timestep) -> eps`` (batched; deterministic).
        clean, noise: x_0 and eps, (N, ...) each.
        alphas_cumprod: the schedule's abar (indexed by integer t).
        dt: the timestep difference (integer timesteps).
        condition: real t -> the model's time condition (identity when None). When c(t) = c(t + dt)
            the two calls are identical, so K(t) = 0 exactly and the network is not called.
    """
    if dt < 1:
        raise ValueError(f"dt must be a positive integer, got {dt!r}")
    condition = condition if condition is not None else (lambda t: t)
    values = []
    for t in timesteps:
        c_here, c_next = int(condition(int(t))), int(condition(int(t) + dt))
        if c_here == c_next:
            values.append(0.0)
            continue
        x_t = noisy_samples(clean, noise, alphas_cumprod, int(t))
        difference = predict(x_t, c_here) - predict(x_t, c_next)
        values.append(difference.flatten(1).norm(dim=1).mean().item() / dt)
    return values
