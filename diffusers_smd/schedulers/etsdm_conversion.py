"""Which parent has which E-TSDM variant, what a saved config records, and converting a stock scheduler.

Used by :class:`~diffusers_smd.SMDPipeline` and ``diffusers-smd sample`` so that a model trained with
E-TSDM is never sampled at the wrong time condition.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from diffusers import SchedulerMixin

from ..etsdm import DEFAULT_ETSDM_INTERVALS, ETSDMSettings, resolve_etsdm_settings
from . import etsdm_schedulers  # noqa: F401  (declares the variants, filling the registry)
from .etsdm_mixin import _VARIANTS, ETSDM_CONFIG_KEYS, ETSDMSchedulerMixin

__all__ = ["ETSDM_VARIANTS", "convert_to_etsdm", "etsdm_settings_from_config", "etsdm_variant"]

ETSDM_VARIANTS: Mapping[type, type] = MappingProxyType(_VARIANTS)
"""Read-only mapping: diffusers scheduler class -> its E-TSDM variant (``DDIMScheduler -> ETSDMDDIMScheduler``)."""


def etsdm_variant(parent_class: type) -> type:
    """The E-TSDM variant of a diffusers scheduler class (a variant maps to itself).

    Raises:
        ValueError: the class has no E-TSDM variant; the message lists the supported parents.
    """
    if isinstance(parent_class, type) and issubclass(parent_class, ETSDMSchedulerMixin):
        return parent_class
    variant = ETSDM_VARIANTS.get(parent_class)
    if variant is None:
        name = getattr(parent_class, "__name__", repr(parent_class))
        supported = ", ".join(sorted(parent.__name__ for parent in ETSDM_VARIANTS))
        raise ValueError(f"{name} has no E-TSDM variant; supported schedulers: {supported}.")
    return variant


def _is_float_timestep_family(class_name) -> bool:
    for parent, variant in ETSDM_VARIANTS.items():
        if class_name in (parent.__name__, variant.__name__):
            return not variant.etsdm_integer_timesteps
    return False


def _read_config(source) -> Mapping:
    if isinstance(source, SchedulerMixin):
        return source.config
    if isinstance(source, Mapping):
        return source
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        candidates = [
            folder / "scheduler" / "scheduler_config.json",
            folder / "scheduler_config.json",
            folder,
        ]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise ValueError(
                f"`config`: {folder} holds no scheduler config (looked for scheduler/scheduler_config.json "
                "and scheduler_config.json)."
            )
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"`config`: {path} is not valid JSON ({error}).") from error
    raise TypeError(
        "`config` must be a scheduler config mapping, a scheduler, or a pipeline / scheduler folder, "
        f"got {type(source).__name__}."
    )


def etsdm_settings_from_config(config) -> ETSDMSettings | None:
    """The E-TSDM settings a saved scheduler config records; ``None`` for a model trained without E-TSDM.

    Args:
        config: a scheduler config (``scheduler.config`` or a dict), a scheduler, or a folder (a saved
            pipeline, whose ``scheduler/scheduler_config.json`` is read, or a saved scheduler).

    A config records E-TSDM when it holds ``etsdm_threshold`` / ``etsdm_intervals``: an E-TSDM scheduler's
    config, or a stock scheduler built with ``from_config`` from one (diffusers keeps unknown keys).
    Settings that switch E-TSDM off give ``None``. Invalid recorded values raise ``ValueError``
    (:func:`~diffusers_smd.resolve_etsdm_settings`).
    """
    if isinstance(config, ETSDMSchedulerMixin):
        return config.etsdm_settings if config.etsdm_enabled else None
    class_name = type(config).__name__ if isinstance(config, SchedulerMixin) else None
    config = _read_config(config)
    if not any(key in config for key in ETSDM_CONFIG_KEYS):
        return None
    settings = resolve_etsdm_settings(
        config.get("etsdm_threshold"),
        config.get("etsdm_intervals", DEFAULT_ETSDM_INTERVALS),
        config.get("num_train_timesteps", 1000),
        integer_timesteps=not _is_float_timestep_family(class_name or config.get("_class_name")),
    )
    return settings if settings.enabled else None


def convert_to_etsdm(scheduler: SchedulerMixin, settings: ETSDMSettings) -> SchedulerMixin:
    """The matching E-TSDM variant of ``scheduler`` with ``settings``, built from its config.

    ``EulerDiscreteScheduler(...)`` becomes ``ETSDMEulerDiscreteScheduler.from_config(scheduler.config,
    **settings.to_config())`` (every other setting kept). A variant that already has these settings is
    returned as is; a variant with other settings is rebuilt.

    Raises:
        ValueError: ``scheduler``'s class has no E-TSDM variant (the message lists the supported ones).
    """
    if not isinstance(settings, ETSDMSettings):
        raise TypeError(
            f"`settings` must be an ETSDMSettings (see resolve_etsdm_settings), got {type(settings).__name__}."
        )
    variant = etsdm_variant(type(scheduler))
    if type(scheduler) is variant and scheduler.etsdm_settings == settings:
        return scheduler
    return variant.from_config(scheduler.config, **settings.to_config())
