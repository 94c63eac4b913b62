"""Is an SMD model's backward step a mixture? The spread of its component means at a fixed x_t.

An ancestral DDPM step from t to s < t draws x_s = mu(x_t, z) + sigma_t xi. For a plain model mu does not
depend on z; for SMD each mixture noise eta gives a component z = g(x_t, eta) with its own mean
(Li et al., ICLR 2024). At a fixed x_t and a fixed xi, x_s varies across mixture draws exactly as mu does:

    spread(x_t) = sqrt( (1/D) sum_d Var_eta[ mu_d(x_t, eta) ] )       (per-coordinate standard deviation)

compared with the single Gaussian's own width sigma_t:  ratio = E_{x_t}[spread(x_t)] / sigma_t.
mu is the posterior mean of q(x_s | x_t, x0_hat) (Ho et al. 2020, eq. 7, for any s < t):

    mu = sqrt(abar_s) (1 - abar_t / abar_s) / (1 - abar_t) x0_hat + sqrt(abar_t / abar_s) (1 - abar_s) / (1 - abar_t) x_t
    sigma_t^2 = (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s)

with x0_hat from the model output (epsilon, v or x0), clipped like the scheduler clips it; both formulas are
those of ``diffusers_smd.losses.gaussian_steps``.
"""

from __future__ import annotations

import math

import torch

from diffusers_smd.lipschitz import noisy_samples
from diffusers_smd.losses.gaussian_steps import (
    gaussian_posterior_coefficients,
    original_sample_from_prediction,
)

__all__ = ["ddpm_grid", "mixture_spread", "posterior_mean_and_std", "predicted_clean"]


def predicted_clean(
    output: torch.Tensor, x_t: torch.Tensor, alpha_bar: float, scheduler_config
) -> torch.Tensor:
    """x0_hat of a model output (``original_sample_from_prediction``), clipped to +-clip_sample_range when the
    scheduler clips (as DDPMScheduler.step)."""
    alpha_bar = torch.tensor(alpha_bar, dtype=torch.float64)
    x0 = original_sample_from_prediction(output, x_t, alpha_bar, scheduler_config["prediction_type"])
    if scheduler_config.get("clip_sample", False):
        limit = float(scheduler_config.get("clip_sample_range", 1.0))
        x0 = x0.clamp(-limit, limit)
    return x0


def posterior_mean_and_std(
    x0: torch.Tensor, x_t: torch.Tensor, alpha_bar_t: float, alpha_bar_s: float
) -> tuple[torch.Tensor, float]:
    """(mu, sigma_t) of q(x_s | x_t, x_0 = x0) for s < t (``gaussian_posterior_coefficients``)."""
    coef_x0, coef_xt, variance = gaussian_posterior_coefficients(
        torch.tensor(alpha_bar_t, dtype=torch.float64), torch.tensor(alpha_bar_s, dtype=torch.float64)
    )
    return float(coef_x0) * x0 + float(coef_xt) * x_t, math.sqrt(max(float(variance), 0.0))


def ddpm_grid(scheduler, num_inference_steps: int) -> list[tuple[int, int]]:
    """(t, s) pairs of a DDPM sampler's grid: s is the next timestep (-1 after the last, where abar_s = 1)."""
    probe = type(scheduler).from_config(scheduler.config)
    probe.set_timesteps(num_inference_steps)
    timesteps = [int(t) for t in probe.timesteps]
    return [(t, timesteps[i + 1] if i + 1 < len(timesteps) else -1) for i, t in enumerate(timesteps)]


@torch.no_grad()
def mixture_spread(
    model, scheduler, clean: torch.Tensor, num_inference_steps: int, num_draws: int, seed: int = 0
) -> list[dict]:
    """For each step (t, s) of the DDPM grid: the mean spread of mu over ``num_draws`` mixture draws at x_t built
    from ``clean`` (fixed noise), sigma_t, and their ratio (None on the last step, where sigma_t = 0)."""
    if num_draws < 2:
        raise ValueError(f"num_draws must be at least 2, got {num_draws}")
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(clean.shape, generator=generator)
    alphas_cumprod = scheduler.alphas_cumprod.double()
    rows = []
    for t, s in ddpm_grid(scheduler, num_inference_steps):
        alpha_bar_t = float(alphas_cumprod[t])
        alpha_bar_s = float(alphas_cumprod[s]) if s >= 0 else 1.0
        x_t = noisy_samples(clean, noise, scheduler.alphas_cumprod, t)
        means = []
        for _ in range(num_draws):
            eta = torch.randn(clean.shape, generator=generator)
            output = model(x_t, torch.tensor(t), mixture_noise=eta).sample
            x0 = predicted_clean(output, x_t, alpha_bar_t, scheduler.config)
            means.append(posterior_mean_and_std(x0, x_t, alpha_bar_t, alpha_bar_s)[0])
        means = torch.stack(means)  # (draws, N, ...)
        spread = means.var(dim=0, unbiased=True).flatten(1).mean(dim=1).sqrt().mean().item()
        sigma = posterior_mean_and_std(clean, x_t, alpha_bar_t, alpha_bar_s)[1]
        rows.append(
            {"t": t, "s": s, "spread": spread, "sigma": sigma, "ratio": spread / sigma if sigma > 0 else None}
        )
    return rows
