"""Building blocks shared by the samplers: the Gaussian reference, the geometric (tempered) path, a
vectorised MALA transition, resampling and weight arithmetic.

The geometric path between the reference ``rho = N(0, s^2 I)`` and the unnormalised target ``pi~`` is

    pi_beta(x) ∝ rho(x)^(1 - beta) pi~(x)^beta = rho(x) exp(beta l(x)),   l = log pi~ - log rho,      (1)

so one evaluation of ``log pi~`` and its score at ``x`` gives ``pi_beta`` at every ``beta``.
"""

from __future__ import annotations

import math

import torch

from .evaluator import TargetEvaluator
from .path import langevin_step

__all__ = [
    "TARGET_ACCEPTANCE",
    "GaussianReference",
    "log_mean_exp",
    "mala_transition",
    "needs_log_prob",
    "next_temperature",
    "systematic_resample",
]

#: The acceptance rate MALA step sizes are tuned towards (Roberts and Rosenthal 1998: 0.574 is optimal).
TARGET_ACCEPTANCE = 0.574


def needs_log_prob(evaluator: TargetEvaluator, name: str) -> None:
    """Refuse a target without a log density for a sampler (``name``) whose moves or weights need one."""
    if not evaluator.has_log_prob:
        raise ValueError(f"{name} needs the target's log density (log_prob or a callable)")


class GaussianReference:
    """``rho = N(0, scale^2 I)`` in ``dim`` dimensions: normalised log density, score and exact sampler."""

    def __init__(self, dim: int, scale: float = 1.0):
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"initial_scale must be a positive finite number, got {scale!r}")
        self.dim, self.scale = dim, float(scale)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * (x * x).sum(1) / self.scale**2 - self.dim * (
            math.log(self.scale) + 0.5 * math.log(2 * math.pi)
        )

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return -x / self.scale**2

    def sample(self, n: int, generator: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
        return (self.scale * torch.randn(n, self.dim, generator=generator, dtype=torch.float64)).to(dtype)


def tempered(
    lp: torch.Tensor, score: torch.Tensor, x: torch.Tensor, beta: float | torch.Tensor, ref: GaussianReference
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (1): ``log pi_beta`` (unnormalised) and its score from the target's ``lp`` and ``score`` at ``x``;
    ``beta`` is a scalar or one value per row (``beta = 0``: the reference, ``1``: the target)."""
    b = torch.as_tensor(beta, dtype=x.dtype)
    lp_ref = ref.log_prob(x)
    log_density = lp_ref + torch.where(b > 0, b * (lp - lp_ref), torch.zeros_like(lp))
    b_col = b[:, None] if b.ndim == 1 else b
    return log_density, b_col * score + (1 - b_col) * ref.score(x)


def mala_transition(
    evaluator: TargetEvaluator,
    x: torch.Tensor,
    lp: torch.Tensor,
    score: torch.Tensor,
    step_size: float | torch.Tensor,
    generator: torch.Generator | None,
    beta: float | torch.Tensor = 1.0,
    reference: GaussianReference | None = None,
    where: str = "",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Metropolis-adjusted Langevin transition per row, invariant for ``pi_beta`` (eq. 1; the target
    itself when ``beta = 1`` or ``reference`` is ``None``). Costs one target evaluation per row.

    Proposal ``y = x + h g(x) + sqrt(2 h) xi`` with ``g`` the score of ``pi_beta``, accepted with probability
    ``min(1, pi_beta(y) q(x | y) / (pi_beta(x) q(y | x)))``. ``lp`` and ``score`` are the TARGET's at ``x``;
    returns the new states with the target's ``lp`` and ``score`` there, and the acceptance of each row.
    """
    dtype = x.dtype
    h = torch.as_tensor(step_size, dtype=dtype)
    h_col = h.reshape(-1, 1) if h.ndim == 1 else h
    if reference is None:
        log_px, g_x = lp, score
    else:
        log_px, g_x = tempered(lp, score, x, beta, reference)
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(dtype)
    y = langevin_step(x, g_x, h, noise)
    lp_y, s_y = evaluator.evaluate(y, where, proposal=True)
    if reference is None:
        log_py, g_y = lp_y, s_y
    else:
        log_py, g_y = tempered(lp_y, torch.nan_to_num(s_y), y, beta, reference)
    fwd = ((y - x - h_col * g_x) ** 2).sum(1) / (4 * h_col.flatten())
    bwd = ((x - y - h_col * g_y) ** 2).sum(1) / (4 * h_col.flatten())
    log_alpha = log_py - log_px - bwd + fwd
    log_alpha = torch.where(torch.isfinite(log_alpha), log_alpha, torch.full_like(log_alpha, -torch.inf))
    accept = torch.rand(x.shape[0], generator=generator, dtype=torch.float64).log() < log_alpha.double()
    return (
        torch.where(accept[:, None], y, x),
        torch.where(accept, lp_y, lp),
        torch.where(accept[:, None], s_y, score),
        accept,
    )


def systematic_resample(
    weights: torch.Tensor, num: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices drawn by systematic resampling from normalised ``weights``."""
    u = (
        torch.rand(1, generator=generator, dtype=torch.float64) + torch.arange(num, dtype=torch.float64)
    ) / num
    cdf = torch.cumsum(weights.double(), 0)
    cdf[-1] = 1.0
    return torch.searchsorted(cdf, u).clamp_max(weights.numel() - 1)


def log_mean_exp(values: torch.Tensor) -> float:
    """``log((1 / n) sum_i exp(v_i))``, stable."""
    v = values.double().flatten()
    return float(torch.logsumexp(v, 0) - math.log(v.numel()))


def next_temperature(
    log_likelihood_ratio: torch.Tensor,
    beta: float,
    ess_fraction: float,
    log_weights: torch.Tensor | None = None,
    iterations: int = 50,
) -> float:
    """Adaptive tempering: the largest ``beta' in (beta, 1]`` whose incremental weights
    ``w_i = exp((beta' - beta) l_i)`` keep a conditional effective sample size (Zhou, Johansen and Aston 2016)

        CESS = n (sum_i W_i w_i)^2 / sum_i W_i w_i^2

    of at least ``ess_fraction * n`` (bisection); ``W`` are the particles' current normalised weights
    (``log_weights``, uniform when ``None``, where the CESS is the ESS of the ``w_i``)."""
    l_ratio = log_likelihood_ratio.double()
    n = l_ratio.numel()
    log_w0 = (
        torch.full((n,), -math.log(n), dtype=torch.float64)
        if log_weights is None
        else torch.log_softmax(log_weights.double(), 0)
    )

    def cess(b: float) -> float:
        inc = (b - beta) * l_ratio
        return float(
            n * torch.exp(2 * torch.logsumexp(log_w0 + inc, 0) - torch.logsumexp(log_w0 + 2 * inc, 0))
        )

    if cess(1.0) >= ess_fraction * n:
        return 1.0
    lo, hi = beta, 1.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cess(mid) >= ess_fraction * n else (lo, mid)
    return lo if lo > beta else hi
