"""The dilation path and the Langevin update, as pure functions.

The dilation path between a Dirac at 0 and a target ``pi`` on R^d is the law of
``sqrt(lambda) X`` with ``X ~ pi`` (Chehab and Korba, arXiv 2406.14040):

    p_lambda(x)           = lambda^(-d/2) pi(x / sqrt(lambda))                      (1)
    grad log p_lambda(x)  = lambda^(-1/2) grad log pi(x / sqrt(lambda))              (2)

so one evaluation of the target's score at the rescaled point gives the path's score exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "SecantCurvature",
    "dilation_path_log_density",
    "dilation_path_score",
    "lambda_schedule",
    "langevin_step",
    "rescale_to_target",
    "secant_curvature",
    "typical_energy_window",
    "validate_lambdas",
    "within_energy_window",
]

SCHEDULE_SHAPES = ("geometric", "linear", "quadratic")


def rescale_to_target(sample: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """The point ``x / sqrt(lambda)`` at which the target is evaluated for the level ``lambda``."""
    return sample / math.sqrt(float(lam)) if not torch.is_tensor(lam) else sample / lam.sqrt()


def dilation_path_score(target_score_at_rescaled: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """Eq. (2): ``grad log p_lambda(x) = lambda^(-1/2) * grad log pi(x / sqrt(lambda))``.

    ``target_score_at_rescaled`` is ``grad log pi`` evaluated at ``x / sqrt(lambda)``.
    """
    lam = torch.as_tensor(lam, dtype=target_score_at_rescaled.dtype)
    return target_score_at_rescaled / lam.sqrt()


def dilation_path_log_density(
    target_log_prob_at_rescaled: torch.Tensor, lam: float | torch.Tensor, dim: int
) -> torch.Tensor:
    """Eq. (1) in logs: ``log p_lambda(x) = log pi(x / sqrt(lambda)) - (d / 2) log lambda``."""
    lam = torch.as_tensor(lam, dtype=target_log_prob_at_rescaled.dtype)
    return target_log_prob_at_rescaled - 0.5 * dim * lam.log()


def langevin_step(
    sample: torch.Tensor, score: torch.Tensor, step_size: float | torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """One unadjusted Langevin (Euler-Maruyama) step ``x + h * score + sqrt(2 h) * noise``.

    ``step_size`` is a scalar or one value per row of ``sample`` (shape ``(B,)``).
    """
    h = torch.as_tensor(step_size, dtype=sample.dtype)
    if h.ndim == 1:
        h = h.reshape(-1, *([1] * (sample.ndim - 1)))
    return sample + h * score + (2.0 * h).sqrt() * noise


def typical_energy_window(dim: int, sigmas: float) -> float:
    """``d / 2 + k sqrt(d / 2)``: the mean plus ``k`` standard deviations of the energy ``log pi(m) - log pi(x)``
    of a Gaussian mode's own samples ``x`` below its top ``m``. That energy is ``chi^2_d / 2`` (mean ``d / 2``,
    variance ``d / 2``) whatever the mode's covariance, so the window is in nats and needs no scale."""
    return 0.5 * dim + sigmas * math.sqrt(0.5 * dim)


def within_energy_window(
    log_density: torch.Tensor, best_log_density: torch.Tensor | float, window: float
) -> torch.Tensor:
    """Rows whose log density is within ``window`` nats of the best: ``best - log pi(y) < window``."""
    return (best_log_density - log_density) < window


def validate_lambdas(lambdas: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Check a lambda schedule: non-empty, finite, strictly increasing, inside (0, 1] and ending at 1.

    Returns it as a float64 tensor; raises ``ValueError`` naming the problem.
    """
    lam = torch.as_tensor(lambdas, dtype=torch.float64).flatten()
    if lam.numel() == 0:
        raise ValueError("lambdas must hold at least one level, got an empty schedule")
    if not torch.isfinite(lam).all():
        raise ValueError(f"lambdas must be finite, got {lam.tolist()}")
    if (lam <= 0).any() or (lam > 1).any():
        raise ValueError(f"lambdas must lie in (0, 1], got min {lam.min().item()} and max {lam.max().item()}")
    if lam.numel() > 1 and not (lam[1:] > lam[:-1]).all():
        raise ValueError(
            "lambdas must be strictly increasing (the path goes from a Dirac at 0 to the target)"
        )
    if lam[-1] != 1.0:
        raise ValueError(f"lambdas must end at 1 (the target itself), got last level {lam[-1].item()}")
    return lam


def lambda_schedule(num_levels: int, lambda_min: float, shape: str = "geometric") -> torch.Tensor:
    """Levels ``lambda_min = lambda_0 < ... < lambda_{K-1} = 1`` (float64).

    ``geometric``: log-uniform (equal ratios, i.e. equal contraction of the rescaled point per level);
    ``linear``: equal increments; ``quadratic``: ``lambda_min + (1 - lambda_min) u^2`` (dense near 0).
    """
    if not isinstance(num_levels, int) or num_levels < 1:
        raise ValueError(f"num_levels must be a positive integer, got {num_levels!r}")
    if not (0.0 < lambda_min <= 1.0):
        raise ValueError(f"lambda_min must lie in (0, 1], got {lambda_min}")
    if shape not in SCHEDULE_SHAPES:
        raise ValueError(f"schedule shape must be one of {SCHEDULE_SHAPES}, got {shape!r}")
    if num_levels == 1:
        return torch.ones(1, dtype=torch.float64)
    if lambda_min == 1.0:
        raise ValueError("lambda_min must be < 1 when num_levels > 1 (levels must be strictly increasing)")
    u = torch.linspace(0.0, 1.0, num_levels, dtype=torch.float64)
    if shape == "geometric":
        lam = torch.exp(math.log(lambda_min) * (1.0 - u))
    elif shape == "linear":
        lam = lambda_min + (1.0 - lambda_min) * u
    else:
        lam = lambda_min + (1.0 - lambda_min) * u**2
    lam[-1] = 1.0
    return validate_lambdas(lam)


def secant_curvature(
    point: torch.Tensor, score: torch.Tensor, previous_point: torch.Tensor, previous_score: torch.Tensor
) -> torch.Tensor:
    """Signed curvature of ``-log pi`` along the last move, one value per row:

        c = -(s(y) - s(y')) . (y - y') / |y - y'|^2

    For a Gaussian N(m, sigma^2 I) it equals 1 / sigma^2 exactly; it is positive where ``-log pi``
    is convex along the move (the directions that limit the stability of an explicit Langevin step)
    and negative in repelling regions (between modes), which do not. Rows that did not move give NaN.
    """
    dy = (point - previous_point).flatten(1)
    ds = (score - previous_score).flatten(1)
    den = (dy * dy).sum(1)
    c = -(ds * dy).sum(1) / den
    return torch.where(den > 0, c, torch.full_like(c, float("nan")))


class SecantCurvature:
    """Running per-particle estimate of the target's local curvature from consecutive score evaluations.

    Rule: ``c_t = max(c_new, m * c_{t-1} + (1 - m) * c_new)``, floored at ``min_curvature``, where
    ``c_new`` is :func:`secant_curvature` of the last move. The estimate rises at once when a particle
    enters a stiffer region (so the next step is stable) and relaxes slowly (momentum ``m``) when it
    leaves one; it costs no extra gradient evaluations. A stable explicit Langevin step then is
    ``h = step_size / c`` with ``step_size < 2`` (the stability limit of Euler on a quadratic).

    Stability check: given the step ``h`` of the last move (``last_step``), a move along which the measured
    curvature makes that step unstable, ``h c_new > 2``, is marked in ``unstable``; the estimator then keeps
    the previous point and score of those rows (:attr:`point`, :attr:`score`), so that the caller can undo
    the move and retry from there with the new, larger curvature. This costs no evaluation (the score at
    the new point was needed to measure the curvature) and never fires on a Gaussian target, whose secant
    curvature is at most its largest precision; it stops the runaway of an explicit step on targets whose
    curvature grows away from the modes (quartic wells, the funnel's neck).
    """

    def __init__(self, initial_curvature: float, min_curvature: float, momentum: float):
        self.initial_curvature = float(initial_curvature)
        self.min_curvature = float(min_curvature)
        self.momentum = float(momentum)
        self.reset()

    def reset(self) -> None:
        self.curvature: torch.Tensor | None = None
        self.unstable: torch.Tensor | None = None
        self._point: torch.Tensor | None = None
        self._score: torch.Tensor | None = None

    @property
    def point(self) -> torch.Tensor | None:
        """The last accepted point of each particle (its previous one where the move was unstable)."""
        return self._point

    @property
    def score(self) -> torch.Tensor | None:
        """The score at :attr:`point`."""
        return self._score

    def update(
        self, point: torch.Tensor, score: torch.Tensor, last_step: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Record the score at ``point`` (rows = particles) and return the curvature estimate ``(B,)``;
        ``last_step`` (``(B,)``, target units) is the step that led to ``point``, for the stability check."""
        self.unstable = torch.zeros(point.shape[0], dtype=torch.bool)
        if self.curvature is None or self.curvature.shape[0] != point.shape[0]:
            self.curvature = torch.full((point.shape[0],), self.initial_curvature, dtype=point.dtype)
        elif self._point is not None:
            new = secant_curvature(point, score, self._point, self._score)
            finite = torch.isfinite(new)
            if last_step is not None:
                self.unstable = finite & (last_step.to(new.dtype) * new > 2.0)
            new = torch.where(finite, new, self.curvature)
            smoothed = self.momentum * self.curvature + (1.0 - self.momentum) * new
            self.curvature = torch.maximum(new, smoothed).clamp_min(self.min_curvature)
        if self._point is None or not self.unstable.any():
            self._point, self._score = point.detach(), score.detach()
        else:
            keep = self.unstable[:, None]
            self._point = torch.where(keep, self._point, point.detach())
            self._score = torch.where(keep, self._score, score.detach())
        return self.curvature
