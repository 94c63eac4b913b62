"""One interface to any target, with honest evaluation counts and checks of every value it returns.

A target may be a callable log density (a function or a ``torch.nn.Module``; its score is taken by
autograd), or an object with ``log_prob`` and/or ``score`` methods (and optionally ``log_prob_and_score``,
both at once). All are evaluated on batches ``(B, d) -> (B,)`` / ``(B, d)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["NonFiniteTargetError", "TargetEvaluator"]


class NonFiniteTargetError(ValueError):
    """The target's log density was NaN or +inf (or -inf at a sampler's state), or its score was NaN/inf,
    at points the sampler reached; the message gives the counts, where in the run, and the first such point.
    ``only_zero_density`` is true when every offending value was a -inf log density (zero density)."""

    def __init__(self, message: str, only_zero_density: bool = False):
        super().__init__(message)
        self.only_zero_density = only_zero_density


def _format_point(x: torch.Tensor, max_entries: int = 6) -> str:
    values = ", ".join(f"{v:.4g}" for v in x[:max_entries].tolist())
    return f"[{values}{', ...' if x.numel() > max_entries else ''}]"


class TargetEvaluator:
    """Wraps a target; counts every evaluation per point.

    ``num_gradient_evaluations`` counts points at which the score was computed (a log density that
    comes with it, through autograd or at the same point, is free); ``num_log_density_evaluations``
    counts points at which only the log density was computed.
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
        both = getattr(target, "log_prob_and_score", None)
        self._both: Callable | None = both if callable(both) and self._score is not None else None
        dim = dim if dim is not None else getattr(target, "dim", None)
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(
                f"dim must be a positive integer (pass dim= or give the target a `dim`), got {dim!r}"
            )
        self.dim = dim
        self.num_gradient_evaluations = 0
        self.num_log_density_evaluations = 0

    @property
    def has_log_prob(self) -> bool:
        return self._log_prob is not None

    def _checked_log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
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
        """The log density (unnormalised) at the rows of ``x`` (not checked; see :meth:`check`)."""
        if self._log_prob is None:
            raise ValueError("this needs the target's log density, but the target only has a score method")
        self.num_log_density_evaluations += x.shape[0]
        with torch.no_grad():
            return self._checked_log_prob(x, self._log_prob(x)).detach()

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``grad log pi`` at the rows of ``x`` (closed form if the target has one, else autograd)."""
        return self.log_prob_and_score(x, need_log_prob=False)[1]

    def log_prob_and_score(
        self, x: torch.Tensor, need_log_prob: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Log density (``None`` when not needed and not free) and score at the rows of ``x`` (not checked)."""
        self.num_gradient_evaluations += x.shape[0]
        if self._score is not None:
            with torch.no_grad():
                if need_log_prob and self._both is not None:
                    lp, s = self._both(x)
                    return self._checked_log_prob(x, lp).detach(), self._checked_score(x, s).detach()
                s = self._checked_score(x, self._score(x)).detach()
                lp = None
                # at the same point as the gradient: not counted apart
                if need_log_prob and self._log_prob is not None:
                    lp = self._checked_log_prob(x, self._log_prob(x)).detach()
            return lp, s
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            lp = self._checked_log_prob(xg, self._log_prob(xg))
            if lp.requires_grad:
                (s,) = torch.autograd.grad(lp.sum(), xg)
            else:  # a log density that does not depend on x (constant, NaN, ...)
                s = torch.zeros_like(x)
        return lp.detach(), s.detach()

    def evaluate(
        self, x: torch.Tensor, where: str = "", proposal: bool = False
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Log density and score at the rows of ``x``, checked by :meth:`check`."""
        lp, s = self.log_prob_and_score(x)
        self.check(x, lp, s, where, proposal)
        return lp, s

    @staticmethod
    def check(
        x: torch.Tensor,
        lp: torch.Tensor | None,
        s: torch.Tensor | None,
        where: str = "",
        proposal: bool = False,
    ) -> None:
        """Raise :class:`NonFiniteTargetError` if the target misbehaved at the rows of ``x``.

        Always an error: a log density of NaN or +inf, and a NaN/inf score where the log density is finite.
        A state (``proposal=False``) must also have a finite log density: -inf means a particle left the
        target's support, where an unadjusted Langevin update is undefined. A Metropolis proposal
        (``proposal=True``) at -inf is legitimate (it is rejected) and its score is not used.
        """
        bad = torch.zeros(x.shape[0], dtype=torch.bool)
        undefined = torch.zeros(x.shape[0], dtype=torch.bool)  # NaN / +inf log density or bad score
        parts = []
        if lp is not None:
            nan, pos_inf, neg_inf = torch.isnan(lp), lp == torch.inf, lp == -torch.inf
            bad |= nan | pos_inf
            undefined |= nan | pos_inf
            counts = [("NaN", nan), ("+inf", pos_inf)] + ([] if proposal else [("-inf", neg_inf)])
            if not proposal:
                bad |= neg_inf
            parts += [f"{name} at {int(m.sum())}" for name, m in counts if m.any()]
        if s is not None:
            s_bad = ~torch.isfinite(s).all(1)
            if lp is not None:
                s_bad &= torch.isfinite(lp)
            bad |= s_bad
            undefined |= s_bad
            if s_bad.any():
                parts.append(f"a NaN/inf score at {int(s_bad.sum())}")
        if not bad.any():
            return
        first = int(bad.nonzero()[0])
        raise NonFiniteTargetError(
            f"the target returned {'; '.join(parts)} of {x.shape[0]} points"
            f"{' ' + where if where else ''}; first such point (target coordinates): "
            f"{_format_point(x[first].double())}. Samples there would be meaningless: check the target's "
            "log density and its domain"
            + (
                " (-inf at a state: a particle left the support, or the sampler diverged and the log density "
                "underflowed; a smaller step size tells them apart)."
                if lp is not None and not proposal and (lp == -torch.inf).any()
                else "."
            ),
            only_zero_density=not undefined.any(),
        )

    def checked_score(self, x: torch.Tensor, where: str = "") -> torch.Tensor:
        """The score at the rows of ``x``, after :meth:`check` of it and of the log density (if any)."""
        return self.evaluate(x, where)[1]
