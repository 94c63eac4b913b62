"""Tell SMD models apart from plain denoisers without importing every model class."""

from __future__ import annotations

import inspect

from torch import nn

__all__ = ["accepts_mixture_noise"]

MIXTURE_ARGUMENTS = ("mixture_noise", "generator")


def _unwrap(model: nn.Module) -> nn.Module:
    """Strip the usual training wrappers: torch.compile (``_orig_mod``) and DDP/DataParallel (``module``)."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def accepts_mixture_noise(model: nn.Module) -> bool:
    """Return True when ``model``'s forward takes the SMD keyword arguments ``mixture_noise`` and ``generator``.

    Decided from the forward signature (after unwrapping torch.compile and DDP), so any model that
    follows the SMD forward convention qualifies, not only this package's classes.
    """
    forward = getattr(_unwrap(model), "forward", None)
    if forward is None:
        return False
    try:
        parameters = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False
    return all(name in parameters for name in MIXTURE_ARGUMENTS)
