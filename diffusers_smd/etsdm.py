"""E-TSDM (early timestep-shared diffusion): the timestep-sharing rule as a pure function.

Yang et al., "Lipschitz Singularities in Diffusion Models" (ICLR 2024). The network is
conditioned on ``f(t)`` instead of ``t``; the noise schedule, the noisy input and every solver
coefficient keep the real ``t``::

    f(t) = t                                       if t >= threshold
    f(t) = left end of t's sub-interval            if t <  threshold

where ``[0, threshold)`` is split into ``intervals`` equal sub-intervals of width
``w = threshold / intervals``. With the defaults for 1000 training steps (threshold 100,
5 intervals): 0-19 -> 0, 20-39 -> 20, ..., 80-99 -> 80, 100 -> 100.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch

__all__ = ["share_timesteps", "validate_etsdm_settings"]

DEFAULT_ETSDM_INTERVALS = 5
"""Number of shared sub-intervals in the paper's default setting."""


def _is_integer(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _check_rule_settings(threshold, intervals, integer_timesteps: bool, names: tuple[str, str]) -> None:
    """Raise ValueError unless ``(threshold, intervals)`` is a valid E-TSDM setting."""
    threshold_name, intervals_name = names
    if not _is_integer(intervals) or intervals < 0:
        raise ValueError(
            f"`{intervals_name}` must be an integer >= 0 (0 switches E-TSDM off), got {intervals!r}."
        )
    if integer_timesteps:
        if not _is_integer(threshold) or threshold < 0:
            raise ValueError(
                f"`{threshold_name}` must be an integer >= 0 for integer timesteps (0 switches E-TSDM off), "
                f"got {threshold!r}."
            )
    elif (
        not isinstance(threshold, Real)
        or isinstance(threshold, bool)
        or not math.isfinite(threshold)
        or threshold < 0
    ):
        raise ValueError(
            f"`{threshold_name}` must be a finite number >= 0 (0 switches E-TSDM off), got {threshold!r}."
        )
    if integer_timesteps and threshold > 0 and intervals > threshold:
        raise ValueError(
            f"`{intervals_name}`={intervals} is more than `{threshold_name}`={threshold} allows: with integer "
            f"timesteps every sub-interval must hold at least one timestep, so `{intervals_name}` must be in "
            f"[0, {threshold}] (threshold // intervals >= 1)."
        )


def validate_etsdm_settings(
    threshold: int | None, intervals: int, num_train_timesteps: int
) -> tuple[int, int]:
    """Check the E-TSDM settings of a discrete-time scheduler and resolve the default threshold.

    ``threshold=None`` means ``num_train_timesteps // 10`` (the paper's 100 of 1000). Either value
    0 switches E-TSDM off. Raises ``ValueError`` naming ``etsdm_threshold`` / ``etsdm_intervals``
    and the allowed range for negative values, non-integers, a threshold above
    ``num_train_timesteps``, or more intervals than the threshold has timesteps.

    Returns:
        ``(threshold, intervals)`` with the threshold resolved.
    """
    if threshold is None:
        threshold = num_train_timesteps // 10
    _check_rule_settings(threshold, intervals, True, ("etsdm_threshold", "etsdm_intervals"))
    if threshold > num_train_timesteps:
        raise ValueError(
            f"`etsdm_threshold` must be in [0, num_train_timesteps={num_train_timesteps}], got {threshold}."
        )
    return threshold, intervals


def _share_tensor(timesteps: torch.Tensor, threshold, intervals: int) -> torch.Tensor:
    if not timesteps.is_floating_point():
        # Exact integer arithmetic: sub-interval k = floor(t * n / threshold); its first integer
        # timestep is ceil(k * threshold / n) (= k * threshold / n when n divides threshold).
        index = torch.div(timesteps * intervals, threshold, rounding_mode="floor")
        left_end = torch.div(index * threshold + (intervals - 1), intervals, rounding_mode="floor")
        return torch.where(timesteps < threshold, left_end, timesteps)
    compute_dtype = torch.promote_types(timesteps.dtype, torch.float32)
    values = timesteps.to(compute_dtype)
    width = threshold / intervals
    quotient = values / width
    # A value within a few rounding units of a boundary counts as on it (0.06 / 0.02 -> 3, not 2.9999...).
    quotient = quotient + quotient.abs() * (4 * torch.finfo(compute_dtype).eps)
    left_end = torch.floor(quotient) * width
    return torch.where(values < threshold, left_end, values).to(timesteps.dtype)


def share_timesteps(
    timesteps: int | float | torch.Tensor, threshold: int | float, intervals: int
) -> int | float | torch.Tensor:
    """The E-TSDM rule ``f(t)``: map (training) timesteps to the timesteps the network is conditioned on.

    Implements ``f(t) = t`` for ``t >= threshold`` and ``f(t) = floor(t / w) * w`` with
    ``w = threshold / intervals`` below it (Yang et al. 2024, Sec. 4). For integer timesteps the
    shared value is the first integer of the sub-interval, ``ceil(floor(t n / threshold) * threshold / n)``,
    which equals ``floor(t / w) * w`` whenever ``intervals`` divides ``threshold``.

    Args:
        timesteps: a Python int or float, or a tensor of any shape, dtype (integer or floating)
            and device. Values are expected in ``[0, num_train_timesteps]`` (or ``[0, 1]`` for
            continuous time).
        threshold: ``t_tilde``; sharing applies below it. Must be an integer for integer timesteps.
        intervals: number ``n`` of equal sub-intervals of ``[0, threshold)``. For integer
            timesteps at most ``threshold``.

    Returns:
        The condition timesteps, same type, shape, dtype and device as the input. With
        ``threshold == 0`` or ``intervals == 0`` the input is returned unchanged.

    Raises:
        ValueError: invalid ``threshold`` / ``intervals`` (see :func:`validate_etsdm_settings`).
        TypeError: ``timesteps`` is not an int, float or real-valued tensor.
    """
    if isinstance(timesteps, torch.Tensor):
        if timesteps.dtype == torch.bool or timesteps.is_complex():
            raise TypeError(f"`timesteps` must hold integer or floating values, got dtype {timesteps.dtype}.")
        integer_timesteps = not timesteps.is_floating_point()
    elif _is_integer(timesteps):
        integer_timesteps = True
    elif isinstance(timesteps, Real) and not isinstance(timesteps, bool):
        integer_timesteps = False
    else:
        raise TypeError(
            f"`timesteps` must be an int, a float or a torch.Tensor, got {type(timesteps).__name__}."
        )
    _check_rule_settings(threshold, intervals, integer_timesteps, ("threshold", "intervals"))
    if threshold == 0 or intervals == 0:
        return timesteps
    if isinstance(timesteps, torch.Tensor):
        return _share_tensor(timesteps, threshold, intervals)
    dtype = torch.int64 if integer_timesteps else torch.float64
    return _share_tensor(torch.tensor(timesteps, dtype=dtype), threshold, intervals).item()
