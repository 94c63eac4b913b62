"""One interface to any target, with honest evaluation counts and input checks.

A target may be a callable log density (a function or a ``torch.nn.Module``; its score is taken by
autograd), or an object with ``log_prob`` and/or ``score`` methods. All are evaluated on batches
``(B, d) -> (B,)`` / ``(B, d)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["TargetEvaluator"]


class TargetEvaluator:
    """Wraps a target; counts every evaluation per point.

    ``num_gradient_evaluations`` counts points at which the score was computed (a log density that
    comes with it through autograd is free); ``num_log_density_evaluations`` counts points at which
    only the log density was computed.
    """

    def __init__(self, target: Any, dim: int | None = None):
        log_prob = getattr(target, "log_prob", None)
        score = getattr(target, "score", None)
        if log_prob is None and score is None:
            if not callable(target):
                raise TypeError(
                    "target must be a callable log density, a torch.nn.Module, or an object with "
                    f"log_prob and/or score methods; got {type(target).__name__}"
                )
            log_prob = target
        self._log_prob: Callable | None = log_prob if callable(log_prob) else None
        self._score: Callable | None = score if callable(score) else None
        dim = dim if dim is not None else getattr(target, "dim", None)
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(
                f"dim must be a positive integer (pass dim= or give the target a `dim`), got {dim!r}"
            )
        self.dim = dim
        self.num_gradient_evaluations = 0
        self.num_log_density_evaluations = 0

    @property
    def has_log_prob(self) -> bool:
        return self._log_prob is not None

    def _checked_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        out = self._log_prob(x)
        if not torch.is_tensor(out) or out.shape != (x.shape[0],):
            shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(
                f"target log density must return a tensor of shape (B,) = ({x.shape[0]},), got {shape}"
            )
        return out

    def _checked_score(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(out) or out.shape != x.shape:
            shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(f"target score must return a tensor of shape {tuple(x.shape)}, got {shape}")
        return out

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The log density (unnormalised) at the rows of ``x``."""
        if self._log_prob is None:
            raise ValueError("this needs the target's log density, but the target only has a score method")
        self.num_log_density_evaluations += x.shape[0]
        with torch.no_grad():
            return self._checked_log_prob(x).detach()

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``grad log pi`` at the rows of ``x`` (closed form if the target has one, else autograd)."""
        return self.log_prob_and_score(x, need_log_prob=False)[1]

    def log_prob_and_score(
        self, x: torch.Tensor, need_log_prob: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Log density (``None`` when not needed and not free) and score at the rows of ``x``."""
        self.num_gradient_evaluations += x.shape[0]
        if self._score is not None:
            with torch.no_grad():
                s = self._checked_score(x, self._score(x)).detach()
                lp = None
                # at the same point as the gradient: not counted apart
                if need_log_prob and self._log_prob is not None:
                    lp = self._checked_log_prob(x).detach()
            return lp, s
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            lp = self._checked_log_prob(xg)
            if lp.requires_grad:
                (s,) = torch.autograd.grad(lp.sum(), xg)
            else:  # a log density that does not depend on x (constant, NaN, ...)
                s = torch.zeros_like(x)
        return lp.detach(), s.detach()

    def checked_score(self, x: torch.Tensor) -> torch.Tensor:
        """The score at the rows of ``x``; raises ``ValueError`` if the log density or score is NaN/inf there."""
        lp, s = self.log_prob_and_score(x)
        if lp is not None and not torch.isfinite(lp).all():
            bad = (~torch.isfinite(lp)).sum().item()
            raise ValueError(f"target log density returned NaN/inf at {bad} of {x.shape[0]} probe points")
        if not torch.isfinite(s).all():
            bad = (~torch.isfinite(s).all(1)).sum().item()
            raise ValueError(f"target score returned NaN/inf at {bad} of {x.shape[0]} probe points")
        return s
