"""Command-line flags generated from a configuration dataclass: one schema, no hand-written parser.

The idea is transformers' ``HfArgumentParser`` (dataclass fields become flags, ``metadata["help"]`` their
help text). It is written out here because our flags keep the conventions of diffusers' training examples,
which ``HfArgumentParser`` does not produce: snake_case only (no ``--kebab-case`` twins), ``store_true``
switches, comma-separated integer lists (``--block_out_channels 32,64,128``) and argument groups.

Each field is declared with :func:`option`::

    learning_rate: float = option(1e-4, "Initial learning rate (after warmup).", group=OPTIMISATION, resume="free")

``resume="free"`` marks a setting that may differ when a run is resumed (learning rate, logging, checkpoint
frequency, ...); every other setting defines the model or the objective and is checked on resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Sequence
from numbers import Integral
from typing import Any

__all__ = [
    "config_from_namespace",
    "config_to_argv",
    "config_to_dict",
    "add_config_arguments",
    "free_on_resume",
    "option",
    "parse_config",
]

#: Settings never written to JSON, logs or argv of a child process (tokens come from `hf auth login`).
SECRET_FIELDS = ("hub_token",)


def option(
    default: Any,
    help: str,
    *,
    group: str,
    choices: Sequence[Any] | None = None,
    resume: str = "fixed",
    metavar: str | None = None,
) -> Any:
    """A configuration field that is also a command-line flag ``--<field name>``.

    Args:
        default: the default value (immutable; tuples for lists).
        help: the flag's help text.
        group: the argument group it is listed under in ``--help``.
        choices: allowed values, checked by argparse and by :meth:`validate` of the config.
        resume: ``"fixed"`` (a resumed run must use the checkpoint's value) or ``"free"``.
        metavar: argparse's metavar.
    """
    if resume not in ("fixed", "free"):
        raise ValueError(f"resume must be 'fixed' or 'free', got {resume!r}")
    metadata = {"help": help, "group": group, "choices": choices, "resume": resume, "metavar": metavar}
    return dataclasses.field(default=default, metadata=metadata)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> int; ``tuple[int, ...] | None`` -> tuple[int, ...]."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return inner
    return annotation


def _fields(config_class: type) -> list[dataclasses.Field]:
    hints = typing.get_type_hints(config_class)
    fields = []
    for field in dataclasses.fields(config_class):
        if "group" in field.metadata:
            field.type = hints[field.name]
            fields.append(field)
    return fields


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type) -> argparse.ArgumentParser:
    """Add one flag per field of ``config_class`` to ``parser``, in argument groups, with help and defaults."""
    groups: dict[str, Any] = {}
    for field in _fields(config_class):
        meta = field.metadata
        group_name = meta["group"]
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        group = groups[group_name]
        kind = _base_type(field.type)
        kwargs: dict[str, Any] = {"help": meta["help"], "default": field.default}
        if kind is bool:
            group.add_argument(f"--{field.name}", action="store_true", **kwargs)
            continue
        if typing.get_origin(kind) is tuple and typing.get_args(kind)[0] is str:
            kwargs.update(type=str, nargs="+")  # --validation_prompts "a cat" "a dog", as diffusers' scripts
            if meta["metavar"]:
                kwargs["metavar"] = meta["metavar"]
        elif typing.get_origin(kind) is tuple:
            kwargs["type"] = _int_list
            kwargs["metavar"] = meta["metavar"] or "N,N,..."
        else:
            kwargs["type"] = kind
            if meta["metavar"]:
                kwargs["metavar"] = meta["metavar"]
        if meta["choices"] is not None:
            kwargs["choices"] = meta["choices"]
        group.add_argument(f"--{field.name}", **kwargs)
    return parser


def config_from_namespace(config_class: type, namespace: argparse.Namespace):
    """Build ``config_class`` from the parsed flags (extra attributes of ``namespace`` are ignored)."""
    values = {}
    for field in _fields(config_class):
        if field.name in vars(namespace):
            value = getattr(namespace, field.name)
            values[field.name] = tuple(value) if isinstance(value, list) else value  # nargs="+" gives lists
    return config_class(**values)


def parse_config(config_class: type, argv: Sequence[str] | None = None, prog: str | None = None):
    """Parse ``argv`` into ``config_class`` and validate it (ValueError naming the flag on bad input)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(config_class.__doc__ or "").strip().split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_arguments(parser, config_class)
    config = config_from_namespace(config_class, parser.parse_args(argv))
    config.validate()
    return config


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, Integral) and not isinstance(value, bool):
        return int(value)
    try:
        json.dumps(value)
    except TypeError:
        return str(value)
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """Every setting as a JSON-safe value, secrets left out (run summaries, trackers, checkpoints)."""
    return {
        field.name: _json_value(getattr(config, field.name))
        for field in _fields(type(config))
        if field.name not in SECRET_FIELDS and "token" not in field.name
    }


def config_to_argv(config: Any) -> list[str]:
    """The flags that reproduce ``config`` (settings at their default are left out); inverse of parsing."""
    argv: list[str] = []
    for field in _fields(type(config)):
        value = getattr(config, field.name)
        if value == field.default or field.name in SECRET_FIELDS:
            continue
        kind = _base_type(field.type)
        if kind is bool:
            if value:
                argv.append(f"--{field.name}")
            continue
        if value is None:
            raise ValueError(f"--{field.name} cannot be reset to None on a command line")
        if typing.get_origin(kind) is tuple and typing.get_args(kind)[0] is str:
            argv += [f"--{field.name}", *value]
            continue
        text = ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
        argv += [f"--{field.name}", text]
    return argv


def free_on_resume(config_class: type) -> tuple[str, ...]:
    """Names of the settings a resumed run may change (``resume="free"``)."""
    return tuple(f.name for f in _fields(config_class) if f.metadata["resume"] == "free")
