"""The one mechanism that turns a diffusers scheduler into its E-TSDM variant.

A variant is declared in two lines, ``class ETSDMEulerDiscreteScheduler(ETSDMSchedulerMixin,
EulerDiscreteScheduler): "doc"``; :meth:`ETSDMSchedulerMixin.__init_subclass__` builds the rest from
the parent. The contract, the same for every variant:

* ``scheduler.timesteps`` holds the timesteps the network must be CONDITIONED on, ``f(t)`` (they may
  repeat); ``scheduler.true_timesteps`` holds the parent's real grid. So the stock loop
  ``for t in scheduler.timesteps: x = scheduler.step(model(x, t), t, x).prev_sample`` queries the
  network at ``f(t)`` with no extra call.
* Every other method is the parent's, evaluated on the real grid: inside ``step``,
  ``scale_model_input``, ``index_for_timestep``, ``previous_timestep``, ``_init_step_index`` (the
  *sampling* methods) and ``add_noise``, ``scale_noise``, ``get_velocity`` (the *noise* methods),
  ``self.timesteps`` is the real grid and the timestep argument is translated from the exposed grid to
  the real one (see :meth:`ETSDMSchedulerMixin._real_timestep` and
  :meth:`ETSDMSchedulerMixin._real_noise_timesteps`). A parent ``step`` / ``scale_model_input`` that
  provably looks at the timestep only to find its start index (through ``_init_step_index``) runs as is:
  it gives the same result without the per-call translation (:mod:`.timestep_reads`).
* With E-TSDM off (either setting 0) nothing is translated: every method IS the parent's.

Parents that step by timestep value and keep no step index (DDPM, DDIM) get one here (``step_index``,
``begin_index``, ``set_begin_index``), so repeated condition values stay unambiguous and
img2img-style pipelines can set where the loop starts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from diffusers.configuration_utils import register_to_config

from ..etsdm import DEFAULT_ETSDM_INTERVALS, ETSDMSettings, _share_tensor, resolve_etsdm_settings
from .timestep_reads import reads_timestep_values

__all__ = ["ETSDM_CONFIG_KEYS", "ETSDMSchedulerMixin"]

ETSDM_CONFIG_KEYS = ("etsdm_threshold", "etsdm_intervals")
"""The config keys an E-TSDM scheduler adds to its parent's (saved in ``scheduler_config.json``)."""

SAMPLING_METHODS = (
    "step",
    "scale_model_input",
    "index_for_timestep",
    "previous_timestep",
    "_init_step_index",
)
"""Methods called with exposed timesteps (from ``scheduler.timesteps``); translated by position.

``step`` and ``scale_model_input`` are left to the parent when it provably reads the timestep only through
``_init_step_index`` (translated) and ``self.timesteps`` only for its length (:mod:`.timestep_reads`)."""
_PROVABLY_INDEX_BASED = ("step", "scale_model_input")
NOISE_METHODS = ("add_noise", "scale_noise", "get_velocity")
"""Methods called with REAL timesteps (training loops); after ``set_begin_index`` the exposed timestep of
the current step is translated (what img2img and inpainting pipelines pass)."""
_TIMESTEP_PARAMETERS = ("timestep", "timesteps")

# Registry filled by __init_subclass__: parent class -> E-TSDM variant (read through schedulers.ETSDM_VARIANTS).
_VARIANTS: dict[type, type] = {}


class ETSDMSchedulerMixin:
    """E-TSDM behaviour shared by every variant: condition grid, real grid, translation to the real grid.

    Put it first in the bases of a two-line declaration; pass ``integer_timesteps=False`` for
    parents whose timesteps are floats in the model's units (flow matching's ``sigma * T``), so the
    threshold may be a float (default ``num_train_timesteps / 10``)::

        class ETSDMEulerDiscreteScheduler(ETSDMSchedulerMixin, EulerDiscreteScheduler):
            \"\"\"E-TSDM variant of EulerDiscreteScheduler.\"\"\"
    """

    etsdm_parent: ClassVar[type]
    """The diffusers scheduler class this variant extends."""
    etsdm_integer_timesteps: ClassVar[bool] = True
    """Whether the threshold counts integer training timesteps (False: float units, flow matching)."""
    _etsdm_owns_step_index: ClassVar[bool] = False
    _etsdm_translated_methods: ClassVar[tuple[str, ...]] = ()
    """The parent methods this variant runs on the real grid with a translated timestep."""

    # instance state with class-level defaults (set before the parent's __init__ runs)
    _etsdm_on = False
    _etsdm_real_grid = False  # True while a parent method runs on the real grid
    _etsdm_true_items = None
    _etsdm_grid_cache = None  # (grid key, condition grid, its values) of the last grid shared
    _step_index = None
    _begin_index = None

    def __init_subclass__(cls, integer_timesteps: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if ETSDMSchedulerMixin not in cls.__bases__:
            return  # a subclass of a variant inherits everything
        parents = [base for base in cls.__bases__ if base is not ETSDMSchedulerMixin]
        if len(parents) != 1 or cls.__bases__[0] is not ETSDMSchedulerMixin:
            raise TypeError(
                f"{cls.__name__}: declare E-TSDM variants as `class X(ETSDMSchedulerMixin, ParentScheduler)`."
            )
        parent = parents[0]
        cls.etsdm_parent = parent
        cls.etsdm_integer_timesteps = integer_timesteps
        cls._etsdm_owns_step_index = not hasattr(parent, "set_begin_index")
        cls.__init__ = _build_init(parent)
        wrapped = []
        for name in SAMPLING_METHODS + NOISE_METHODS:
            method = getattr(parent, name, None)
            if method is None or _timestep_position(method) is None:
                continue
            if name in _PROVABLY_INDEX_BASED and not reads_timestep_values(parent, name):
                continue  # the parent's own method is exact: it finds its start through _init_step_index
            setattr(cls, name, _build_method(cls, parent, name, noise=name in NOISE_METHODS))
            wrapped.append(name)
        cls._etsdm_translated_methods = tuple(wrapped)
        if cls._etsdm_owns_step_index:
            cls.step_index = _own_step_index
            cls.begin_index = _own_begin_index
            cls.set_begin_index = _own_set_begin_index
        _VARIANTS[parent] = cls

    # ---- settings ---------------------------------------------------------------------------
    @property
    def etsdm_settings(self) -> ETSDMSettings:
        """The resolved settings (a ``None`` threshold in the config resolves to the default)."""
        return self._etsdm_settings

    @property
    def etsdm_enabled(self) -> bool:
        """Whether the rule changes anything (both settings > 0)."""
        return self._etsdm_on

    def condition_timesteps(self, timesteps: int | float | torch.Tensor) -> int | float | torch.Tensor:
        """Real timestep(s) -> the timestep(s) the network is conditioned on, ``f(t)``.

        Use in training loops: build ``x_t`` and the target with the real ``t``, call the model at
        ``condition_timesteps(t)``. Identity when E-TSDM is off. Negative timesteps raise ``ValueError``.
        """
        return self._etsdm_settings.condition_timesteps(timesteps)

    @classmethod
    def _get_compatibles(cls) -> list[type]:
        """The parent's compatible diffusers schedulers, then every E-TSDM variant of the same timestep family."""
        compatibles = list(cls.etsdm_parent._get_compatibles())
        compatibles += [
            v for v in _VARIANTS.values() if v.etsdm_integer_timesteps == cls.etsdm_integer_timesteps
        ]
        return list(dict.fromkeys(compatibles))

    # ---- the two grids ----------------------------------------------------------------------
    @property
    def timesteps(self):
        """Condition timesteps ``f(t)`` of the real grid (the real grid itself inside the parent's methods)."""
        return self._etsdm_true if self._etsdm_real_grid else self._etsdm_exposed

    @timesteps.setter
    def timesteps(self, value) -> None:
        # Every assignment of the parent (``__init__``, ``set_timesteps``) lands here: keep the real grid
        # and compute the condition grid once, so stepping costs no rule evaluation.
        self._etsdm_true = value
        self._etsdm_exposed = value
        if self._etsdm_on and isinstance(value, torch.Tensor):
            self._etsdm_true_list = value.tolist()
            self._etsdm_true_items = None  # the real grid's elements, unbound on first use
            # pipelines call set_timesteps on every generation, mostly with the same grid: reuse its shares
            key = (value.dtype, value.device, tuple(self._etsdm_true_list))
            cached = self._etsdm_grid_cache
            if cached is None or cached[0] != key:
                exposed = self._share_grid(value)
                if exposed.storage_offset() != 0 or not exposed.is_contiguous():
                    exposed = exposed.clone()  # own storage: an element's storage offset is its index
                cached = self._etsdm_grid_cache = (key, exposed, exposed.tolist())
            _, self._etsdm_exposed, self._etsdm_exposed_list = cached
        if self._etsdm_owns_step_index:
            self._step_index = None
            self._begin_index = None

    @property
    def true_timesteps(self):
        """The parent's real timestep grid (``timesteps`` holds its condition timesteps)."""
        return self._etsdm_true

    def _share_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """``share_timesteps(grid)`` with the validated settings (the rule's core, checked once per grid)."""
        lowest = min(self._etsdm_true_list, default=0)
        if lowest < 0:
            raise ValueError(
                f"{type(self).__name__}: E-TSDM conditions the network on training timesteps in "
                f"[0, num_train_timesteps], but this configuration's timesteps are not (one is {lowest!r}), e.g. "
                "EulerDiscreteScheduler with timestep_type='continuous'. Use the parent scheduler, or switch "
                "E-TSDM off with etsdm_intervals=0."
            )
        settings = self._etsdm_settings
        return _share_tensor(grid, settings.threshold, settings.intervals)

    # ---- translation from the exposed grid to the real one ---------------------------------------
    def _current_index(self) -> int | None:
        return self._step_index if self._step_index is not None else self._begin_index

    def _unbind_true_grid(self) -> tuple[torch.Tensor, ...]:
        """The real grid's elements as the 0-d tensors iterating it gives (computed once per grid)."""
        self._etsdm_true_items = self._etsdm_true.unbind()
        return self._etsdm_true_items

    def _true_item(self, index: int) -> torch.Tensor:
        """``true_timesteps[index]``; unbound once per grid when every step is translated, else indexed."""
        if self._etsdm_true_items is None and "step" not in self._etsdm_translated_methods:
            return self._etsdm_true[index]  # a handful of lookups per loop: cheaper than unbinding the grid
        return (self._etsdm_true_items or self._unbind_true_grid())[index]

    def _real_at(self, index: int, like):
        """The real timestep at ``index`` in the form of ``like`` (a Python number or a tensor)."""
        if not isinstance(like, torch.Tensor):
            return self._etsdm_true_list[index]
        real = self._true_item(index)
        if real.dtype is not like.dtype or real.shape != like.shape or real.device != like.device:
            real = real.to(device=like.device, dtype=like.dtype).reshape(like.shape)
        return real

    def _real_timestep(self, timestep) -> tuple[Any, int | None]:
        """Translate a timestep given to a sampling method: ``(real timestep, its index or None)``.

        0. an element of ``timesteps`` itself (what a loop over ``scheduler.timesteps`` passes) -> the real
           timestep at the same position (found from the view's storage offset, no value lookup);
        1. the exposed value at the current step index (the step index, else the begin index) -> the
           real timestep at that index (repeated condition values are resolved by position);
        2. else a value of the exposed grid -> the real timestep at its FIRST position (where a loop
           enters a shared sub-interval);
        3. else the value is taken as a real timestep (off-grid stepping, as the parent allows).
        """
        if isinstance(timestep, torch.Tensor):
            if timestep._base is self._etsdm_exposed and timestep.dim() == 0:
                index = timestep.storage_offset()
                return self._true_item(index), index
            if timestep.numel() != 1:
                return self._real_noise_timesteps(timestep, always=True), None
            value = timestep.item()
        else:
            value = timestep
        exposed = self._etsdm_exposed_list
        index = self._current_index()
        if index is None or not 0 <= index < len(exposed) or exposed[index] != value:
            try:
                index = exposed.index(value)
            except ValueError:
                return timestep, None
        return self._real_at(index, timestep), index

    def _real_noise_timesteps(self, timesteps, *, always: bool = False):
        """Translate timesteps given to a noise method: real, except the exposed one at the current index.

        Only after ``set_begin_index`` (img2img / inpainting pipelines pass ``timesteps[begin:begin+1]``,
        then ``timesteps[i + 1]`` after step ``i``); training loops pass real timesteps and no begin index.
        """
        if self._begin_index is None and not always:
            return timesteps
        index = self._current_index()
        if index is None or not 0 <= index < len(self._etsdm_exposed_list):
            return timesteps
        exposed, real = self._etsdm_exposed_list[index], self._etsdm_true_list[index]
        if exposed == real:
            return timesteps
        if isinstance(timesteps, torch.Tensor):
            if not timesteps.is_floating_point() and not float(real).is_integer():
                return timesteps  # an integer tensor cannot hold this grid's real value (the parent goes by index)
            return timesteps.masked_fill(timesteps == exposed, real)
        return real if timesteps == exposed else timesteps

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


# ---- step index for parents that keep none (DDPM, DDIM) ------------------------------------------
@property
def _own_step_index(self) -> int | None:
    """Index into ``timesteps`` of the next ``step`` (``None`` before the first; E-TSDM on only)."""
    return self._step_index


@property
def _own_begin_index(self) -> int | None:
    """First index of the loop, set by img2img-style pipelines through ``set_begin_index``."""
    return self._begin_index


def _own_set_begin_index(self, begin_index: int = 0) -> None:
    """Start the next loop at ``timesteps[begin_index]`` (img2img ``strength``); as diffusers' index-based schedulers."""
    self._begin_index = begin_index


# ---- builders ------------------------------------------------------------------------------------
def _timestep_position(function: Callable) -> tuple[int, str] | None:
    """``(positional index after self, name)`` of the timestep parameter of ``function``, or None."""
    parameters = list(inspect.signature(function).parameters)[1:]
    for position, name in enumerate(parameters):
        if name in _TIMESTEP_PARAMETERS:
            return position, name
    return None


def _copy_signature(function: Callable, parent_function: Callable, signature=None) -> Callable:
    function.__signature__ = signature or inspect.signature(parent_function)
    function.__annotations__ = dict(getattr(parent_function, "__annotations__", {}))
    function.__name__ = parent_function.__name__
    function.__qualname__ = parent_function.__qualname__
    return function


_METHOD_TEMPLATE = """
def {name}({parameters}):
    if self._etsdm_real_grid or not self._etsdm_on:
        return _parent(self, {arguments})
{lookup}{translate}    self._etsdm_real_grid = True
    try:
        _output = _parent(self, {arguments})
    finally:
        self._etsdm_real_grid = False
{track}    return _output
"""
# an element of `timesteps` (what a loop over it passes) has the real timestep at the same position
_TRANSLATE_SAMPLING = """    if type({t}) is _Tensor and {t}._base is self._etsdm_exposed and not {t}.dim():
        _index = {t}.storage_offset()
        {t} = {real}
    elif {t} is not None:
        {t}, _index = self._real_timestep({t})
    else:
        _index = None
"""
_TRANSLATE_NOISE = """    if {t} is not None:
        {t} = self._real_noise_timesteps({t})
"""
_REAL_ITEM_UNBOUND = "(self._etsdm_true_items or self._unbind_true_grid())[_index]"
_REAL_ITEM_INDEXED = "self._etsdm_true[_index]"


def _build_method(cls: type, parent: type, name: str, *, noise: bool) -> Callable:
    """The parent's method, run on the real grid with its timestep argument translated.

    Generated with the parent's exact signature (pipelines inspect ``step`` for ``eta`` / ``generator``),
    forwarding every argument as given: it runs on every sampling step, and the budget is a few percent of
    a solver step. Off, or when called from inside another translated method, it is the parent's method.
    """
    parent_method = getattr(parent, name)
    signature = inspect.signature(parent_method)
    _, timestep = _timestep_position(parent_method)
    namespace: dict[str, Any] = {"_parent": parent_method, "_Tensor": torch.Tensor}
    parameters, arguments, keyword_only = ["self"], [], False
    for i, parameter in enumerate(list(signature.parameters.values())[1:]):
        default = ""
        if parameter.default is not inspect.Parameter.empty:
            namespace[f"_default_{i}"] = parameter.default
            default = f"=_default_{i}"
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            parameters.append(f"*{parameter.name}")
            arguments.append(f"*{parameter.name}")
            keyword_only = True
        elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
            parameters.append(f"**{parameter.name}")
            arguments.append(f"**{parameter.name}")
        elif parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            if not keyword_only:
                parameters.append("*")
                keyword_only = True
            parameters.append(parameter.name + default)
            arguments.append(f"{parameter.name}={parameter.name}")
        else:  # positional-or-keyword (diffusers schedulers have no positional-only parameters)
            parameters.append(parameter.name + default)
            arguments.append(parameter.name)
    lookup = ""
    if name == "index_for_timestep":  # a lookup in a schedule the caller gives is not translated
        lookup = "    if schedule_timesteps is not None:\n        return _parent(self, {arguments})\n"
    if noise:
        translate = _TRANSLATE_NOISE.format(t=timestep)
    else:
        # `step` runs once per element of the grid: unbind the real grid once; other methods index it
        real = _REAL_ITEM_UNBOUND if name == "step" else _REAL_ITEM_INDEXED
        translate = _TRANSLATE_SAMPLING.format(t=timestep, real=real)
    track = ""
    if name == "step" and cls._etsdm_owns_step_index:  # DDPM / DDIM: the step index is ours
        track = "    self._step_index = None if _index is None else _index + 1\n"
    source = _METHOD_TEMPLATE.format(
        name=name,
        parameters=", ".join(parameters),
        arguments=", ".join(arguments),
        lookup=lookup.format(arguments=", ".join(arguments)),
        translate=translate,
        track=track,
    )
    exec(compile(source, f"<E-TSDM {parent.__name__}.{name}>", "exec"), namespace)  # noqa: S102
    method = namespace[name]
    method.__doc__ = f"`{parent.__name__}.{name}` on the real timestep grid" + (
        " (timesteps are real; after `set_begin_index` the exposed timestep of the current step is "
        "translated to its real one)."
        if noise
        else " (a timestep of `timesteps` is translated to the real one at the same position)."
    )
    method.__annotations__ = dict(getattr(parent_method, "__annotations__", {}))
    method.__qualname__ = f"{cls.__qualname__}.{name}"
    method.__module__ = cls.__module__
    return method


def _build_init(parent: type) -> Callable:
    """``__init__``: the parent's arguments plus keyword-only ``etsdm_threshold=None``, ``etsdm_intervals=5``.

    Wrapped with diffusers' ``@register_to_config`` so every key is saved and ``from_config`` of a plain
    parent config works. Settings are validated by :func:`resolve_etsdm_settings` before the parent's
    ``__init__`` runs, and stored in the config as Python numbers.
    """
    parent_init = parent.__init__
    parent_signature = inspect.signature(parent_init)
    extra = [
        inspect.Parameter(
            "etsdm_threshold", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="int | float | None"
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
        settings = resolve_etsdm_settings(
            threshold,
            intervals,
            arguments["num_train_timesteps"],
            integer_timesteps=type(self).etsdm_integer_timesteps,
        )
        self._etsdm_settings = settings
        self._etsdm_on = settings.enabled
        parent_init(self, **arguments, **var_kwargs)
        # JSON-safe values in the config (numpy integers would break save_pretrained); None stays None
        self.register_to_config(
            etsdm_threshold=None if threshold is None else settings.threshold,
            etsdm_intervals=settings.intervals,
        )
        self._explicit_etsdm_config()

    __init__.__doc__ = (
        f"Same arguments as `{parent.__name__}`, plus `etsdm_threshold` (default None: a tenth of "
        "num_train_timesteps; 0 switches E-TSDM off) and `etsdm_intervals` (default 5; 0 switches it off)."
    )
    return register_to_config(_copy_signature(__init__, parent_init, signature))
