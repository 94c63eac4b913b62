"""Baselines in the pipeline's style: ULA and MALA on the target, annealed Langevin on the geometric path.

Each takes ``(target, num_samples, num_steps, generator, dim, dtype)``, starts from ``N(0, I)`` and returns a
:class:`LangevinSamplerOutput` with the samples and the evaluations spent. ULA and the annealed sampler use
the same per-particle curvature-adaptive step as the dilation path (:class:`~.path.SecantCurvature`,
``h = min(step_size / c, max_step_size)``); MALA adapts each chain's step to an acceptance rate of 0.574.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils import BaseOutput

from .evaluator import TargetEvaluator
from .path import SecantCurvature, langevin_step

__all__ = [
    "LangevinSamplerOutput",
    "annealed_geometric_langevin",
    "mala",
    "metropolis_adjusted_langevin",
    "ula",
]


@dataclass
class LangevinSamplerOutput(BaseOutput):
    """Samples and diagnostics of a baseline sampler.

    Args:
        samples: ``(num_samples, d)``.
        step_sizes: ``(num_steps,)`` median step size of each step.
        num_gradient_evaluations: target-score evaluations spent.
        num_log_density_evaluations: log-density-only evaluations spent.
        acceptance_rate: mean Metropolis acceptance (MALA), else ``None``.
    """

    samples: torch.Tensor
    step_sizes: torch.Tensor
    num_gradient_evaluations: int
    num_log_density_evaluations: int
    acceptance_rate: float | None = None


def _check(num_samples: int, num_steps: int, step_size: float) -> None:
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}")


def _start(evaluator: TargetEvaluator, num_samples: int, generator, dtype) -> torch.Tensor:
    return torch.randn(num_samples, evaluator.dim, generator=generator, dtype=torch.float64).to(dtype)


def _diverged(name: str, step: int, h: torch.Tensor) -> FloatingPointError:
    return FloatingPointError(f"{name} diverged at step {step} with step size {h.max().item():.4g}")


def _adaptive_langevin(evaluator, x, num_steps, generator, score_fn, step_size, max_step_size, name):
    curvature = SecantCurvature(initial_curvature=1.0, min_curvature=1e-3, momentum=0.9)
    sizes = []
    for k in range(num_steps):
        s = score_fn(x, k)
        h = (step_size / curvature.update(x, s)).clamp_max(max_step_size)
        x = langevin_step(x, s, h, torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.dtype))
        if not torch.isfinite(x).all():
            raise _diverged(name, k, h)
        sizes.append(h.median())
    return x, torch.stack(sizes)


@torch.no_grad()
def ula(
    target: Any,
    num_samples: int,
    num_steps: int,
    generator: torch.Generator | None = None,
    dim: int | None = None,
    dtype: torch.dtype = torch.float32,
    step_size: float = 0.5,
    max_step_size: float = 4.0,
) -> LangevinSamplerOutput:
    """Unadjusted Langevin ``x <- x + h grad log pi(x) + sqrt(2 h) xi`` on the target, from ``N(0, I)``."""
    _check(num_samples, num_steps, step_size)
    ev = TargetEvaluator(target, dim)
    x = _start(ev, num_samples, generator, dtype)
    x, sizes = _adaptive_langevin(
        ev, x, num_steps, generator, lambda z, k: ev.score(z), step_size, max_step_size, "ULA"
    )
    return LangevinSamplerOutput(x, sizes, ev.num_gradient_evaluations, ev.num_log_density_evaluations)


@torch.no_grad()
def annealed_geometric_langevin(
    target: Any,
    num_samples: int,
    num_steps: int,
    generator: torch.Generator | None = None,
    dim: int | None = None,
    dtype: torch.dtype = torch.float32,
    num_levels: int = 20,
    beta_min: float = 1e-3,
    step_size: float = 0.5,
    max_step_size: float = 4.0,
) -> LangevinSamplerOutput:
    """ULA along the geometric path ``pi_beta ∝ pi^beta N(0, I)^(1 - beta)``, ``beta`` log-uniform from
    ``beta_min`` to 1 over ``num_levels`` levels of ``num_steps / num_levels`` steps; the score is
    ``beta grad log pi(x) - (1 - beta) x``."""
    _check(num_samples, num_steps, step_size)
    if not (isinstance(num_levels, int) and 1 <= num_levels <= num_steps):
        raise ValueError(f"num_levels must be an integer in [1, num_steps], got {num_levels!r}")
    ev = TargetEvaluator(target, dim)
    betas = torch.logspace(torch.log10(torch.tensor(beta_min)).item(), 0.0, num_levels, dtype=torch.float64)
    level_of_step = (torch.arange(num_steps) * num_levels) // num_steps

    def score(z, k):
        beta = float(betas[level_of_step[k]])
        return beta * ev.score(z) - (1.0 - beta) * z

    x = _start(ev, num_samples, generator, dtype)
    x, sizes = _adaptive_langevin(
        ev, x, num_steps, generator, score, step_size, max_step_size, "annealed Langevin"
    )
    return LangevinSamplerOutput(x, sizes, ev.num_gradient_evaluations, ev.num_log_density_evaluations)


def metropolis_adjusted_langevin(
    evaluator: TargetEvaluator,
    x: torch.Tensor,
    num_steps: int,
    generator: torch.Generator | None,
    step_size: float | torch.Tensor,
    target_acceptance: float = 0.574,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """``num_steps`` target evaluations of MALA from the rows of ``x`` (the first evaluation is at ``x``).

    Proposal ``y = x + h s(x) + sqrt(2 h) xi``, accepted with probability
    ``min(1, pi(y) q(x|y) / (pi(x) q(y|x)))``. ``step_size`` is a scalar or one value per chain; each chain's
    ``h`` adapts during the first half of the run (``log h += (accepted - target_acceptance) / sqrt(k + 1)``)
    and is frozen after. Returns the final states, their scores, the median step per step and the mean
    acceptance of the second half.
    """
    n, dtype = x.shape[0], x.dtype
    lp, s = evaluator.log_prob_and_score(x)
    log_h = torch.as_tensor(step_size, dtype=torch.float64).log().expand(n).clone()
    sizes, accepted_total = [], 0.0
    for k in range(num_steps - 1):
        h = log_h.exp().to(dtype)
        y = langevin_step(x, s, h, torch.randn(x.shape, generator=generator, dtype=torch.float64).to(dtype))
        lp_y, s_y = evaluator.log_prob_and_score(y)
        fwd = ((y - x - h[:, None] * s) ** 2).sum(1) / (4 * h)
        bwd = ((x - y - h[:, None] * s_y) ** 2).sum(1) / (4 * h)
        log_alpha = lp_y - lp - bwd + fwd
        log_alpha = torch.where(torch.isfinite(log_alpha), log_alpha, torch.full_like(log_alpha, -torch.inf))
        accept = torch.rand(n, generator=generator, dtype=torch.float64).log() < log_alpha.double()
        x = torch.where(accept[:, None], y, x)
        lp = torch.where(accept, lp_y, lp)
        s = torch.where(accept[:, None], s_y, s)
        if k < num_steps // 2:
            log_h += (accept.double() - target_acceptance) / (k + 1) ** 0.5
        else:
            accepted_total += accept.double().mean().item()
        sizes.append(h.median())
    rate = accepted_total / max(1, num_steps - 1 - num_steps // 2)
    return x, s, torch.stack(sizes) if sizes else torch.zeros(0), rate


@torch.no_grad()
def mala(
    target: Any,
    num_samples: int,
    num_steps: int,
    generator: torch.Generator | None = None,
    dim: int | None = None,
    dtype: torch.dtype = torch.float32,
    step_size: float = 0.5,
    target_acceptance: float = 0.574,
) -> LangevinSamplerOutput:
    """Metropolis-adjusted Langevin from ``N(0, I)`` (:func:`metropolis_adjusted_langevin`); the evaluation
    at the starting points is the first of the ``num_steps``."""
    _check(num_samples, num_steps, step_size)
    ev = TargetEvaluator(target, dim)
    x = _start(ev, num_samples, generator, dtype)
    x, _, sizes, rate = metropolis_adjusted_langevin(
        ev, x, num_steps, generator, step_size, target_acceptance
    )
    return LangevinSamplerOutput(x, sizes, ev.num_gradient_evaluations, ev.num_log_density_evaluations, rate)
