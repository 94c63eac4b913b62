"""E-TSDM (early timestep-shared diffusion): the settings and the timestep-sharing rule, as pure functions.

Yang et al., "Lipschitz Singularities in Diffusion Models" (ICLR 2024). The network is
conditioned on ``f(t)`` instead of ``t``; the noise schedule, the noisy input and every solver
coefficient keep the real ``t``::

    f(t) = t                                       if t >= threshold
    f(t) = left end of t's sub-interval            if t <  threshold

where ``[0, threshold)`` is split into ``intervals`` equal sub-intervals of width
``w = threshold / intervals``. With the defaults for 1000 training steps (threshold 100,
5 intervals): 0-19 -> 0, 20-39 -> 20, ..., 80-99 -> 80, 100 -> 100.

This module is the one home of the settings rule: :func:`resolve_etsdm_settings` (the validation
every scheduler, the training configuration and the command line use), :func:`default_etsdm_threshold`
and :data:`DEFAULT_ETSDM_INTERVALS` (the defaults) and :func:`share_timesteps` (the rule itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

import torch

__all__ = [
    "DEFAULT_ETSDM_INTERVALS",
    "ETSDMSettings",
    "default_etsdm_threshold",
    "resolve_etsdm_settings",
    "share_timesteps",
]

DEFAULT_ETSDM_INTERVALS = 5
"""Number of shared sub-intervals in the paper's default setting."""


def _is_integer(value) -> bool:
    """A Python or numpy integer (not a bool)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    """A finite Python or numpy real number (not a bool)."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def default_etsdm_threshold(
    num_train_timesteps: int | float, *, integer_timesteps: bool = True
) -> int | float:
    """The paper's threshold scaled to a schedule: a tenth of the training range.

    ``num_train_timesteps // 10`` for integer timesteps (100 of 1000, Yang et al. 2024, Sec. 5) and
    ``num_train_timesteps / 10`` for float timesteps (flow matching's ``sigma * num_train_timesteps``,
    or continuous time in ``[0, 1]``: 0.1).
    """
    if integer_timesteps:
        return int(num_train_timesteps) // 10
    return float(num_train_timesteps) / 10


@dataclass(frozen=True)
class ETSDMSettings:
    """Resolved E-TSDM settings: share the condition of timesteps below ``threshold`` in ``intervals`` groups.

    Build it with :func:`resolve_etsdm_settings`, which validates the values and resolves the default
    threshold. Either value 0 switches E-TSDM off. It unpacks and compares like the tuple
    ``(threshold, intervals)``.
    """

    threshold: int | float
    intervals: int

    def __post_init__(self) -> None:
        # numpy numbers become Python numbers, so that to_config() is always JSON-safe
        for name in ("threshold", "intervals"):
            value = getattr(self, name)
            if _is_integer(value):
                object.__setattr__(self, name, int(value))
            elif isinstance(value, Real) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))

    def __iter__(self):
        """``threshold, intervals = settings`` (the ``(threshold, intervals)`` tuple of diffusers-smd 0.1)."""
        return iter((self.threshold, self.intervals))

    def __eq__(self, other) -> bool:
        if isinstance(other, ETSDMSettings | tuple):
            return tuple(self) == tuple(other)
        return NotImplemented

    @property
    def enabled(self) -> bool:
        """Whether the rule changes anything (both values > 0)."""
        return self.threshold > 0 and self.intervals > 0

    def to_config(self) -> dict[str, int | float]:
        """``{"etsdm_threshold": ..., "etsdm_intervals": ...}`` with JSON-safe Python numbers (scheduler config keys)."""
        return {"etsdm_threshold": self.threshold, "etsdm_intervals": self.intervals}

    def condition_timesteps(self, timesteps: int | float | torch.Tensor) -> int | float | torch.Tensor:
        """Real timestep(s) -> the timestep(s) the network is conditioned on: :func:`share_timesteps` with these settings."""
        return share_timesteps(timesteps, self.threshold, self.intervals)


def _threshold_rule(num_train_timesteps, integer_timesteps: bool) -> str:
    kind = "an integer" if integer_timesteps else "a number"
    return f"{kind} in [0, num_train_timesteps={num_train_timesteps}] (0 switches E-TSDM off)"


def resolve_etsdm_settings(
    threshold: int | float | None,
    intervals: int,
    num_train_timesteps: int | float,
    *,
    integer_timesteps: bool = True,
) -> ETSDMSettings:
    """Validate E-TSDM settings for a schedule and resolve the default threshold (the one validation).

    Rules (each violation raises a ``ValueError`` that names ``etsdm_threshold`` / ``etsdm_intervals``,
    ``num_train_timesteps`` and the allowed values):

    * ``intervals`` is an integer >= 0 (Python or numpy);
    * ``threshold`` is ``None`` (the default, :func:`default_etsdm_threshold`) or a number in
      ``[0, num_train_timesteps]``, an integer for integer timesteps;
    * ``0`` given explicitly for either value switches E-TSDM off;
    * otherwise, with integer timesteps, every sub-interval must hold at least one timestep:
      ``intervals <= threshold``. This also applies to the default threshold, so a schedule too short
      for the default (``num_train_timesteps // 10 < intervals``, e.g. T < 50 with 5 intervals) is an
      error, never a silent switch-off.

    Args:
        threshold: ``t_tilde``, or ``None`` for the default.
        intervals: number ``n`` of equal sub-intervals of ``[0, threshold)``.
        num_train_timesteps: the schedule's training range ``T`` (timesteps lie in ``[0, T]``).
        integer_timesteps: ``False`` for float timesteps (flow matching's ``sigma * T``, continuous time).

    Returns:
        :class:`ETSDMSettings` holding Python numbers (numpy integers are converted).
    """
    if not _is_integer(intervals) or intervals < 0:
        raise ValueError(
            f"`etsdm_intervals` must be an integer >= 0 (0 switches E-TSDM off), got {intervals!r}."
        )
    if integer_timesteps:
        if not _is_integer(num_train_timesteps) or num_train_timesteps < 1:
            raise ValueError(f"`num_train_timesteps` must be an integer >= 1, got {num_train_timesteps!r}.")
        num_train_timesteps = int(num_train_timesteps)
    elif not _is_real(num_train_timesteps) or num_train_timesteps <= 0:
        raise ValueError(f"`num_train_timesteps` must be a number > 0, got {num_train_timesteps!r}.")
    intervals = int(intervals)
    is_default = threshold is None
    if is_default:
        threshold = default_etsdm_threshold(num_train_timesteps, integer_timesteps=integer_timesteps)
    elif integer_timesteps and not _is_integer(threshold):
        raise ValueError(
            f"`etsdm_threshold` must be None (the default, num_train_timesteps // 10) or "
            f"{_threshold_rule(num_train_timesteps, True)}, got {threshold!r}."
        )
    elif not integer_timesteps and not _is_real(threshold):
        raise ValueError(
            f"`etsdm_threshold` must be None (the default, num_train_timesteps / 10) or "
            f"{_threshold_rule(num_train_timesteps, False)}, got {threshold!r}."
        )
    if not 0 <= threshold <= num_train_timesteps:
        raise ValueError(
            f"`etsdm_threshold` must be {_threshold_rule(num_train_timesteps, integer_timesteps)}, got {threshold!r}."
        )
    threshold = int(threshold) if integer_timesteps else float(threshold)
    switched_off = intervals == 0 or (threshold == 0 and not is_default)
    if integer_timesteps and not switched_off and intervals > threshold:
        given = (
            f"the default `etsdm_threshold` = num_train_timesteps // 10 = {threshold}"
            if is_default
            else f"`etsdm_threshold`={threshold}"
        )
        fix = (
            f", or pass `etsdm_threshold` in [{intervals}, {num_train_timesteps}]"
            if intervals <= num_train_timesteps
            else ""
        )
        raise ValueError(
            f"`etsdm_intervals`={intervals} does not fit {given} (num_train_timesteps={num_train_timesteps}): "
            f"with integer timesteps every sub-interval must hold at least one timestep, so `etsdm_intervals` "
            f"must be in [0, {threshold}] (0 switches E-TSDM off){fix}."
        )
    return ETSDMSettings(threshold=threshold, intervals=intervals)


def _check_rule_settings(threshold, intervals, integer_timesteps: bool) -> None:
    """Raise ValueError unless ``(threshold, intervals)`` is a valid argument pair of :func:`share_timesteps`."""
    if not _is_integer(intervals) or intervals < 0:
        raise ValueError(f"`intervals` must be an integer >= 0 (0 switches E-TSDM off), got {intervals!r}.")
    if integer_timesteps:
        if not _is_integer(threshold) or threshold < 0:
            raise ValueError(
                f"`threshold` must be an integer >= 0 for integer timesteps (0 switches E-TSDM off), got {threshold!r}."
            )
        if threshold > 0 and intervals > threshold:
            raise ValueError(
                f"`intervals`={intervals} is more than `threshold`={threshold} allows: with integer timesteps every "
                f"sub-interval must hold at least one timestep, so `intervals` must be in [0, {threshold}]."
            )
    elif not _is_real(threshold) or threshold < 0:
        raise ValueError(
            f"`threshold` must be a finite number >= 0 (0 switches E-TSDM off), got {threshold!r}."
        )


def _check_non_negative(timesteps: torch.Tensor) -> None:
    if timesteps.device.type == "meta" or timesteps.dtype == torch.uint8 or timesteps.numel() == 0:
        return
    if bool((timesteps < 0).any()):
        lowest = timesteps.min().item()
        raise ValueError(
            f"`timesteps` must be >= 0 (training timesteps in [0, num_train_timesteps]), got a value of {lowest!r}."
        )


def _share_tensor(timesteps: torch.Tensor, threshold, intervals: int) -> torch.Tensor:
    if not timesteps.is_floating_point():
        # Exact integer arithmetic in int64 (narrow dtypes would overflow t * n): sub-interval
        # k = floor(t * n / threshold); its first integer timestep is ceil(k * threshold / n)
        # (= k * threshold / n when n divides threshold).
        values = timesteps.to(torch.int64)
        index = torch.div(values * intervals, threshold, rounding_mode="floor")
        left_end = torch.div(index * threshold + (intervals - 1), intervals, rounding_mode="floor")
        return torch.where(values < threshold, left_end, values).to(timesteps.dtype)
    compute_dtype = torch.promote_types(timesteps.dtype, torch.float32)
    values = timesteps.to(compute_dtype)
    width = threshold / intervals
    # Sub-interval k holds k * w <= t < (k + 1) * w, both products evaluated in floating point, so the
    # returned left end never exceeds t (a plain floor(t / w) can be one off: 0.06 / 0.02 = 2.9999...).
    index = torch.floor(values / width)
    index += (index + 1) * width <= values
    index.sub_((index * width > values).to(index.dtype))
    left_end = index.clamp_(0, intervals - 1).mul_(width)
    return torch.where(values < threshold, left_end, values).to(timesteps.dtype)


def share_timesteps(
    timesteps: int | float | torch.Tensor, threshold: int | float, intervals: int
) -> int | float | torch.Tensor:
    """The E-TSDM rule ``f(t)``: map (training) timesteps to the timesteps the network is conditioned on.

    Implements ``f(t) = t`` for ``t >= threshold`` and ``f(t) = floor(t / w) * w`` with
    ``w = threshold / intervals`` below it (Yang et al. 2024, Sec. 4). For integer timesteps the
    shared value is the first integer of the sub-interval, ``ceil(floor(t n / threshold) * threshold / n)``,
    which equals ``floor(t / w) * w`` whenever ``intervals`` divides ``threshold``; it is computed in
    int64 whatever the input dtype. For float timesteps sub-interval ``k`` holds ``k w <= t < (k + 1) w``
    with both products evaluated in floating point (so ``f(0.06) = 0.06`` for ``w = 0.02``).

    Args:
        timesteps: a Python int or float (numpy scalars too), or a tensor of any shape, dtype
            (integer or floating) and device, with values >= 0 (in ``[0, num_train_timesteps]``, or
            ``[0, 1]`` for continuous time).
        threshold: ``t_tilde``; sharing applies below it. Must be an integer for integer timesteps.
        intervals: number ``n`` of equal sub-intervals of ``[0, threshold)``. For integer
            timesteps at most ``threshold``.

    Returns:
        The condition timesteps, same type, shape, dtype and device as the input. With
        ``threshold == 0`` or ``intervals == 0`` the input is returned unchanged.

    Raises:
        ValueError: invalid ``threshold`` / ``intervals``, or a negative timestep.
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
    _check_rule_settings(threshold, intervals, integer_timesteps)
    if not isinstance(timesteps, torch.Tensor):
        dtype = torch.int64 if integer_timesteps else torch.float64
        tensor = torch.tensor(timesteps, dtype=dtype)
        _check_non_negative(tensor)
        if threshold == 0 or intervals == 0:
            return timesteps
        return _share_tensor(tensor, threshold, intervals).item()
    _check_non_negative(timesteps)
    if threshold == 0 or intervals == 0:
        return timesteps
    return _share_tensor(timesteps, threshold, intervals)
