"""The one mixin that turns a diffusers scheduler into an E-TSDM scheduler.

Contract (the same for every E-TSDM scheduler):

* after ``set_timesteps``, ``scheduler.timesteps`` holds the timesteps the network must be
  CONDITIONED on, ``f(t)`` (they may repeat), and ``scheduler.true_timesteps`` holds the real grid;
* ``step()`` advances by step index on the real grid, so the stock loop
  ``for t in scheduler.timesteps: x = scheduler.step(model(x, t), t, x).prev_sample`` is
  E-TSDM-correct with any model;
* ``condition_timesteps(t)`` maps real timesteps to condition timesteps for training loops.

The subclasses build their ``__init__`` / ``set_timesteps`` / ``step`` with the factories below,
which keep the parent's exact signature (pipelines inspect ``step`` for ``eta`` / ``generator`` and
``set_timesteps`` for ``timesteps``; ``from_config`` reads ``__init__``) and add the config keys
``etsdm_threshold`` and ``etsdm_intervals``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from diffusers.configuration_utils import register_to_config

from ..etsdm import DEFAULT_ETSDM_INTERVALS, share_timesteps, validate_etsdm_settings

__all__ = ["ETSDMSchedulerMixin"]

ETSDM_CONFIG_KEYS = ("etsdm_threshold", "etsdm_intervals")


class ETSDMSchedulerMixin:
    """Shared E-TSDM behaviour: condition grid, real grid, index-based stepping, begin index.

    Put it first in the bases: ``class ETSDMDDIMScheduler(ETSDMSchedulerMixin, DDIMScheduler)``.
    """

    # ---- settings ---------------------------------------------------------------------------
    @property
    def etsdm_settings(self) -> tuple[int, int]:
        """The resolved ``(threshold, intervals)`` (threshold ``None`` in the config resolves to T // 10)."""
        return self._etsdm_threshold, self._etsdm_intervals

    @property
    def etsdm_enabled(self) -> bool:
        """Whether the rule changes anything (both settings > 0)."""
        return self._etsdm_threshold > 0 and self._etsdm_intervals > 0

    def condition_timesteps(self, timesteps: int | float | torch.Tensor) -> int | float | torch.Tensor:
        """Real timestep(s) -> the timestep(s) the network is conditioned on, ``f(t)``.

        Use in training loops: build ``x_t`` and the target with the real ``t``, call the model at
        ``condition_timesteps(t)``. Identity when E-TSDM is switched off.
        """
        return share_timesteps(timesteps, self._etsdm_threshold, self._etsdm_intervals)

    # ---- step index / begin index (same names and meaning as DPMSolverMultistepScheduler) -----
    @property
    def step_index(self) -> int | None:
        """Index into ``timesteps`` / ``true_timesteps`` of the next ``step``; ``None`` before the first."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """First index of the loop, set by img2img-style pipelines through ``set_begin_index``."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start the next loop at ``timesteps[begin_index]`` (img2img ``strength``)."""
        self._begin_index = begin_index

    def _expose_condition_timesteps(self) -> None:
        """Keep the real grid in ``true_timesteps`` and expose the condition grid as ``timesteps``.

        Called once per ``set_timesteps`` (and at construction), so stepping costs no rule evaluation.
        """
        self.true_timesteps = self.timesteps
        self.timesteps = self.condition_timesteps(self.true_timesteps)
        self._true_timestep_list = self.true_timesteps.tolist()
        self._condition_timestep_list = self.timesteps.tolist()
        self._step_index = None
        self._begin_index = None

    def _start_index(self, timestep) -> int:
        """Index at which a loop starts: the begin index if set, else the first match of ``timestep``.

        ``timestep`` is looked up first among the condition timesteps (first occurrence, as they
        can repeat), then among the real ones.
        """
        if self._begin_index is not None:
            return self._begin_index
        value = timestep.item() if isinstance(timestep, torch.Tensor) else timestep
        for grid in (self._condition_timestep_list, self._true_timestep_list):
            if value in grid:
                return grid.index(value)
        raise ValueError(
            f"timestep {value!r} is neither in `timesteps` nor in `true_timesteps` of this scheduler; "
            "call `set_timesteps` and pass the values of `scheduler.timesteps`."
        )

    def _init_step_index(self, timestep) -> None:
        self._step_index = self._start_index(timestep)

    def _step_on_true_grid(self, parent_step: Callable, model_output, timestep, sample, *args, **kwargs):
        """Run the parent's ``step`` at the REAL timestep of the current index, then advance the index.

        For parents whose ``step`` reads the timestep value (DDPM, DDIM). A finished loop restarts
        from ``timestep`` (or the begin index) on the next call, like the value-based parents.
        """
        index = self._step_index
        if index is None or index >= len(self._true_timestep_list):
            index = self._start_index(timestep)
            self._step_index = index
        output = parent_step(self, model_output, self._true_timestep_list[index], sample, *args, **kwargs)
        self._step_index = index + 1
        return output

    def _true_timesteps_for_noise(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Timesteps for a value-based ``add_noise``: exposed values at the current index become real.

        Only when a begin index is set (img2img / inpainting pipelines call ``set_begin_index``) and
        the values equal the exposed timestep at the current index; otherwise the values are real
        timesteps already (training loops).
        """
        if self._begin_index is None:
            return timesteps
        index = self._step_index if self._step_index is not None else self._begin_index
        if index >= len(self._true_timestep_list):
            return timesteps
        exposed, real = self._condition_timestep_list[index], self._true_timestep_list[index]
        if exposed != real and bool((timesteps == exposed).all()):
            return torch.full_like(timesteps, real)
        return timesteps

    def _explicit_etsdm_config(self) -> None:
        """Keep the E-TSDM keys out of ``_use_default_values``.

        Then any plain diffusers class built from this config (``DDIMScheduler.from_config``, which
        ``DDIMPipeline`` runs on every scheduler it is given) logs diffusers' warning that
        ``etsdm_threshold`` / ``etsdm_intervals`` "are not expected and will be ignored", instead of
        dropping E-TSDM silently; the keys also survive as hidden config for a swap back.
        """
        defaults = self.config.get("_use_default_values")
        if defaults is not None:
            kept = [key for key in defaults if key not in ETSDM_CONFIG_KEYS]
            self.register_to_config(_use_default_values=kept)


def _copy_signature(function: Callable, signature: inspect.Signature, parent_function: Callable) -> Callable:
    function.__signature__ = signature
    function.__annotations__ = dict(getattr(parent_function, "__annotations__", {}))
    return function


def etsdm_init(parent: type) -> Callable:
    """Build ``__init__`` for ``class X(ETSDMSchedulerMixin, parent)``.

    The signature is the parent's plus keyword-only ``etsdm_threshold=None`` and
    ``etsdm_intervals=5``; it is wrapped with diffusers' ``@register_to_config``, so all keys are
    saved and ``from_config`` of a plain parent config works. Settings are validated before any work.
    """
    parent_init = parent.__init__
    parent_signature = inspect.signature(parent_init)
    extra = [
        inspect.Parameter(
            "etsdm_threshold", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="int | None"
        ),
        inspect.Parameter(
            "etsdm_intervals",
            inspect.Parameter.KEYWORD_ONLY,
            default=DEFAULT_ETSDM_INTERVALS,
            annotation="int",
        ),
    ]
    parameters = list(parent_signature.parameters.values())
    var_keyword = [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    parameters = [p for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD] + extra + var_keyword
    signature = parent_signature.replace(parameters=parameters)

    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop("self")
        threshold = arguments.pop("etsdm_threshold")
        intervals = arguments.pop("etsdm_intervals")
        var_kwargs = arguments.pop(var_keyword[0].name, {}) if var_keyword else {}
        self._etsdm_threshold, self._etsdm_intervals = validate_etsdm_settings(
            threshold, intervals, arguments["num_train_timesteps"]
        )
        parent_init(self, **arguments, **var_kwargs)
        self._explicit_etsdm_config()
        self._expose_condition_timesteps()

    __init__.__doc__ = (
        f"Same arguments as `{parent.__name__}`, plus `etsdm_threshold` (default None: "
        "num_train_timesteps // 10; 0 switches E-TSDM off) and `etsdm_intervals` (default 5; 0 switches it off)."
    )
    return register_to_config(_copy_signature(__init__, signature, parent_init))


def etsdm_set_timesteps(parent: type) -> Callable:
    """Build ``set_timesteps``: the parent's, then expose the condition grid (same signature)."""
    parent_set_timesteps = parent.set_timesteps

    def set_timesteps(self, *args, **kwargs):
        parent_set_timesteps(self, *args, **kwargs)
        self._expose_condition_timesteps()

    set_timesteps.__doc__ = (
        f"`{parent.__name__}.set_timesteps`, then `timesteps` = condition timesteps f(t) and "
        "`true_timesteps` = the real grid."
    )
    return _copy_signature(set_timesteps, inspect.signature(parent_set_timesteps), parent_set_timesteps)


def etsdm_index_step(parent: type) -> Callable:
    """Build ``step`` for a parent whose ``step`` reads the timestep VALUE (DDPM, DDIM).

    The value passed in only starts a loop; the parent's update then runs at the real timestep of
    the current step index (same signature as the parent's ``step``).
    """
    parent_step = parent.step

    def step(self, model_output, timestep, sample, *args, **kwargs):
        return self._step_on_true_grid(parent_step, model_output, timestep, sample, *args, **kwargs)

    step.__doc__ = (
        f"`{parent.__name__}.step` at the real timestep of the current step index "
        "(`timestep` may be the exposed condition value)."
    )
    return _copy_signature(step, inspect.signature(parent_step), parent_step)
