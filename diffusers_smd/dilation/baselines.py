"""Langevin baselines: ULA and MALA on the target, annealed Langevin on the geometric path.

Every sampler here and in :mod:`.tempering` has the same signature and budget accounting, in the style of
k-diffusion's samplers::

    sampler(target, num_samples, num_steps, generator=None, dim=None, dtype=torch.float32, **options)
        -> SamplerOutput

``num_steps`` is the budget: target-gradient evaluations per sample (``num_samples * num_steps`` in all;
a log density at the same point as a gradient is free, a log density alone is counted apart in
``num_log_density_evaluations``). Chains start from ``N(0, initial_scale^2 I)``. ULA and the annealed sampler
use the per-particle curvature-adaptive step of the dilation path (:class:`~.path.SecantCurvature`,
``h = min(step_size / c, max_step_size)``); MALA adapts each chain's step to an acceptance rate of 0.574.
Every target value is checked (:meth:`~.evaluator.TargetEvaluator.check`).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils import BaseOutput

from .evaluator import TargetEvaluator
from .kernels import TARGET_ACCEPTANCE, GaussianReference, mala_transition, needs_log_prob, tempered
from .path import SecantCurvature, langevin_step

__all__ = [
    "LangevinSamplerOutput",
    "SamplerOutput",
    "annealed_geometric_langevin",
    "mala",
    "metropolis_adjusted_langevin",
    "ula",
]


@dataclass
class SamplerOutput(BaseOutput):
    """Samples and diagnostics of a sampler.

    Args:
        samples: ``(num_samples, d)``, equally weighted.
        step_sizes: median step size of each step (or of each level / round).
        num_gradient_evaluations: target-score evaluations spent.
        num_log_density_evaluations: log-density-only evaluations spent.
        acceptance_rate: mean Metropolis acceptance, else ``None``.
        log_Z: estimate of the log normalising constant of the target's ``exp(log_prob)``, for samplers
            that give one (SMC, AIS), else ``None``.
        effective_sample_size: of the final importance weights (SMC, AIS), else ``None``.
    """

    samples: torch.Tensor
    step_sizes: torch.Tensor
    num_gradient_evaluations: int
    num_log_density_evaluations: int
    acceptance_rate: float | None = None
    log_Z: float | None = None
    effective_sample_size: float | None = None


LangevinSamplerOutput = SamplerOutput
"""The output's earlier name, kept for existing code."""


def positive_int(name: str, value: Any) -> int:
    """``value`` as a Python int (numpy integers accepted), or a ``ValueError`` naming ``name``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_common(num_samples: Any, num_steps: Any, step_size: float) -> tuple[int, int]:
    """Validate the shared arguments before any work; returns them as ints."""
    num_samples, num_steps = positive_int("num_samples", num_samples), positive_int("num_steps", num_steps)
    if not (isinstance(step_size, (int, float)) and step_size > 0):
        raise ValueError(f"step_size must be positive, got {step_size!r}")
    return num_samples, num_steps


def _diverged(name: str, step: int, h: torch.Tensor) -> FloatingPointError:
    return FloatingPointError(f"{name} diverged at step {step} with step size {h.max().item():.4g}")


def _adaptive_langevin(x, num_steps, generator, score_fn, step_size, max_step_size, name):
    curvature = SecantCurvature(initial_curvature=1.0, min_curvature=1e-3, momentum=0.9)
    sizes, h = [], None
    for k in range(num_steps):
        s = score_fn(x, k)
        c = curvature.update(x, s, h)
        if curvature.unstable.any():  # undo unstable moves, as the dilation path's scheduler does
            x = torch.where(curvature.unstable[:, None], curvature.point, x)
            s = torch.where(curvature.unstable[:, None], curvature.score, s)
        h = (step_size / c).clamp_max(max_step_size)
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
    initial_scale: float = 1.0,
) -> SamplerOutput:
    """Unadjusted Langevin ``x <- x + h grad log pi(x) + sqrt(2 h) xi`` on the target."""
    num_samples, num_steps = check_common(num_samples, num_steps, step_size)
    ev = TargetEvaluator(target, dim)
    x = GaussianReference(ev.dim, initial_scale).sample(num_samples, generator, dtype)

    def score(z, k):
        return ev.evaluate(z, f"at ULA step {k}")[1]

    x, sizes = _adaptive_langevin(x, num_steps, generator, score, step_size, max_step_size, "ULA")
    return SamplerOutput(x, sizes, ev.num_gradient_evaluations, ev.num_log_density_evaluations)


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
    initial_scale: float = 1.0,
) -> SamplerOutput:
    """ULA along the geometric path ``pi_beta ∝ pi^beta rho^(1 - beta)``, ``rho = N(0, initial_scale^2 I)``,
    ``beta`` log-uniform from ``beta_min`` to 1 over ``num_levels`` levels of ``num_steps / num_levels``
    steps; the score is ``beta grad log pi(x) + (1 - beta) grad log rho(x)``."""
    num_samples, num_steps = check_common(num_samples, num_steps, step_size)
    num_levels = positive_int("num_levels", num_levels)
    if num_levels > num_steps:
        raise ValueError(f"num_levels must be an integer in [1, num_steps], got {num_levels!r}")
    ev = TargetEvaluator(target, dim)
    ref = GaussianReference(ev.dim, initial_scale)
    betas = torch.logspace(torch.log10(torch.tensor(beta_min)).item(), 0.0, num_levels, dtype=torch.float64)
    level_of_step = (torch.arange(num_steps) * num_levels) // num_steps

    def score(z, k):
        beta = float(betas[level_of_step[k]])
        lp, s = ev.evaluate(z, f"at annealed Langevin step {k} (beta={beta:.4g})")
        return tempered(lp, s, z, beta, ref)[1] if lp is not None else beta * s + (1 - beta) * ref.score(z)

    x = ref.sample(num_samples, generator, dtype)
    x, sizes = _adaptive_langevin(
        x, num_steps, generator, score, step_size, max_step_size, "annealed Langevin"
    )
    return SamplerOutput(x, sizes, ev.num_gradient_evaluations, ev.num_log_density_evaluations)


def metropolis_adjusted_langevin(
    evaluator: TargetEvaluator,
    x: torch.Tensor,
    num_steps: int,
    generator: torch.Generator | None,
    step_size: float | torch.Tensor,
    target_acceptance: float = TARGET_ACCEPTANCE,
    name: str = "MALA",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """``num_steps`` target evaluations of MALA (:func:`~.kernels.mala_transition`) from the rows of ``x``
    (the first evaluation is at ``x``). ``step_size`` is a scalar or one value per chain; each chain's ``h``
    adapts during the first half of the run (``log h += (accepted - target_acceptance) / sqrt(k + 1)``) and
    is frozen after. Returns the final states, their scores, the median step per step and the mean
    acceptance of the second half."""
    n = x.shape[0]
    lp, s = evaluator.evaluate(x, f"at the start of {name}")
    log_h = torch.as_tensor(step_size, dtype=torch.float64).log().expand(n).clone()
    sizes, accepted_total = [], 0.0
    for k in range(num_steps - 1):
        h = log_h.exp().to(x.dtype)
        x, lp, s, accept = mala_transition(evaluator, x, lp, s, h, generator, where=f"at {name} step {k}")
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
    target_acceptance: float = TARGET_ACCEPTANCE,
    initial_scale: float = 1.0,
) -> SamplerOutput:
    """Metropolis-adjusted Langevin (:func:`metropolis_adjusted_langevin`); the evaluation at the starting
    points is the first of the ``num_steps``."""
    num_samples, num_steps = check_common(num_samples, num_steps, step_size)
    ev = TargetEvaluator(target, dim)
    needs_log_prob(ev, "MALA")
    x = GaussianReference(ev.dim, initial_scale).sample(num_samples, generator, dtype)
    x, _, sizes, rate = metropolis_adjusted_langevin(
        ev, x, num_steps, generator, step_size, target_acceptance
    )
    return SamplerOutput(x, sizes, ev.num_gradient_evaluations, ev.num_log_density_evaluations, rate)
