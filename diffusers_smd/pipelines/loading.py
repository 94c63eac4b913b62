"""Make saved diffusers-smd pipelines load through ``DiffusionPipeline.from_pretrained``.

diffusers 0.42 finds a pipeline class by ``getattr(diffusers, model_index["_class_name"])`` and
looks up components of other libraries in ``sys.modules`` only. Two routes therefore exist:

* the user imported ``diffusers_smd``: :func:`register_with_diffusers` (run at import) makes diffusers
  resolve this package's classes without running any file from the model folder;
* the user did not: ``trust_remote_code=True`` runs the folder's loader shims, which contain nothing
  but an import from the installed package.

:func:`write_loading_shims` writes those shims and the ``model_index.json`` entries naming them.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import diffusers
from diffusers import DiffusionPipeline
from diffusers.pipelines import pipeline_loading_utils, pipeline_utils

PACKAGE = "diffusers_smd"
# Root shim for the pipeline class. Not ``diffusers_smd.py``: a file of that name at the top of a model
# folder would shadow the package for scripts run from inside that folder.
PIPELINE_SHIM_MODULE = "diffusers_smd_loader"
# Component shims must be named after the library recorded in model_index.json (diffusers checks
# ``<component>/<library>.py`` for Hub repos), so they are ``unet/diffusers_smd.py`` and the like.
COMPONENT_SHIM_MODULE = PACKAGE
SHIM_MARKER = "# diffusers-smd loader shim"

LOADING_HELP = (
    "This model needs the diffusers-smd package (pip install diffusers-smd). Load it either with\n"
    "    import diffusers_smd\n"
    "    pipe = DiffusionPipeline.from_pretrained(path_or_repo_id)\n"
    "or, without importing it yourself,\n"
    "    pipe = DiffusionPipeline.from_pretrained(path_or_repo_id, trust_remote_code=True)\n"
    "(this file only imports the installed package; it contains no model code)."
)


def _package():
    return sys.modules[PACKAGE]


def _package_class(name: str) -> type | None:
    """The class ``name`` exported by diffusers_smd, or None."""
    obj = getattr(_package(), name, None)
    return obj if isinstance(obj, type) else None


def shim_source(class_names: list[str]) -> str:
    """Text of a loader shim: a docstring with :data:`LOADING_HELP` and an import of ``class_names``."""
    help_lines = "\n".join(f"# {line}" if line else "#" for line in LOADING_HELP.splitlines())
    names = ", ".join(sorted(set(class_names)))
    return (
        f"{SHIM_MARKER}\n{help_lines}\n"
        "try:\n"
        f"    from diffusers_smd import {names}  # noqa: F401\n"
        "except ImportError as error:\n"
        "    raise ImportError(\n"
        f"        'This model needs diffusers-smd providing {names}: pip install -U diffusers-smd'\n"
        "    ) from error\n"
    )


def _is_our_shim(path: Path) -> bool:
    try:
        return path.read_text(encoding="utf-8").startswith(SHIM_MARKER)
    except OSError:
        return False


def _component_class(entry: Any) -> str | None:
    """Class name of a model_index.json component entry that belongs to diffusers_smd, else None."""
    if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)):
        return None
    library, class_name = entry
    if library.split(".")[0] != PACKAGE or not isinstance(class_name, str):
        return None
    return class_name if _package_class(class_name) is not None else None


def _pipeline_class_name(entry: Any) -> str | None:
    """Name of the pipeline class when it is one of diffusers_smd's, else None."""
    if isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] == PIPELINE_SHIM_MODULE:
        entry = entry[1]
    if not isinstance(entry, str):
        return None
    cls = _package_class(entry)
    return entry if cls is not None and issubclass(cls, DiffusionPipeline) else None


def write_loading_shims(folder: str | os.PathLike) -> list[str]:
    """Add the ``trust_remote_code`` loader shims to a saved pipeline folder and name them in model_index.json.

    For every component whose class comes from diffusers_smd, the entry becomes
    ``["diffusers_smd", ClassName]`` (never an internal module path) and ``<component>/diffusers_smd.py``
    is written; when the pipeline class is diffusers_smd's, ``_class_name`` becomes
    ``["diffusers_smd_loader", ClassName]`` and ``diffusers_smd_loader.py`` is written at the top.
    Each shim only imports the installed package. Stale shims of ours are removed; nothing else is
    touched. Idempotent. Returns the written shim paths, relative to ``folder``.
    """
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ValueError(
            f"`folder` must hold a saved pipeline (model_index.json); {index_path} does not exist."
        )
    model_index = json.loads(index_path.read_text(encoding="utf-8"))

    component_classes: dict[str, str] = {}
    for key, entry in model_index.items():
        if key.startswith("_"):
            continue
        class_name = _component_class(entry)
        if class_name is not None:
            component_classes[key] = class_name
            model_index[key] = [COMPONENT_SHIM_MODULE, class_name]
        elif isinstance(entry, (list, tuple)) and _is_our_shim(folder / key / f"{COMPONENT_SHIM_MODULE}.py"):
            (folder / key / f"{COMPONENT_SHIM_MODULE}.py").unlink()

    pipeline_name = _pipeline_class_name(model_index.get("_class_name"))
    all_classes = sorted({*component_classes.values(), *([pipeline_name] if pipeline_name else [])})
    source = shim_source(all_classes) if all_classes else ""

    written = []
    root_shim = folder / f"{PIPELINE_SHIM_MODULE}.py"
    if pipeline_name is not None:
        model_index["_class_name"] = [PIPELINE_SHIM_MODULE, pipeline_name]
        root_shim.write_text(source, encoding="utf-8")
        written.append(root_shim.name)
    elif _is_our_shim(root_shim):
        root_shim.unlink()
    for key in component_classes:
        (folder / key).mkdir(exist_ok=True)
        (folder / key / f"{COMPONENT_SHIM_MODULE}.py").write_text(source, encoding="utf-8")
        written.append(f"{key}/{COMPONENT_SHIM_MODULE}.py")

    index_path.write_text(json.dumps(model_index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return written


def _shim_pipeline_class(custom_pipeline: Any, class_name: Any) -> type | None:
    """The installed pipeline class a shim reference names, or None when it is not one of ours."""
    if custom_pipeline is None or not isinstance(class_name, str):
        return None
    stem = Path(str(custom_pipeline)).name.removesuffix(".py")
    if stem != PIPELINE_SHIM_MODULE:
        return None
    cls = _package_class(class_name)
    return cls if cls is not None and issubclass(cls, DiffusionPipeline) else None


def _resolve_installed_pipeline(original):
    """Wrap diffusers' ``_get_pipeline_class`` so a folder's diffusers_smd shim resolves to the installed class.

    Only references to :data:`PIPELINE_SHIM_MODULE` naming one of this package's pipelines are
    intercepted; the shim file is then not executed at all (so no ``trust_remote_code`` is needed, and
    nothing from the folder runs). Everything else goes to diffusers unchanged.
    """
    signature = inspect.signature(original)

    @functools.wraps(original)
    def get_pipeline_class(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return original(*args, **kwargs)
        arguments = bound.arguments
        cls = _shim_pipeline_class(arguments.get("custom_pipeline"), arguments.get("class_name"))
        if cls is None:
            return original(*args, **kwargs)
        requested = arguments.get("class_obj")
        # ``SMDPipeline.from_pretrained`` (or a user subclass) keeps its own class, as diffusers does.
        if isinstance(requested, type) and requested is not DiffusionPipeline and issubclass(requested, cls):
            return requested
        return cls

    get_pipeline_class.__diffusers_smd_wrapped__ = True
    return get_pipeline_class


def register_with_diffusers(*pipeline_classes: type) -> None:
    """Let ``DiffusionPipeline.from_pretrained`` resolve diffusers_smd classes once the package is imported.

    * each pipeline class becomes an attribute of the ``diffusers`` module (``_class_name`` lookups);
    * ``diffusers.pipelines.diffusers_smd`` points at this package, so component entries
      ``["diffusers_smd", ClassName]`` resolve from the installed package even when the folder holds
      shim files (and a Hub repo's component files pass diffusers' check);
    * diffusers' pipeline-class lookup maps the folder's ``diffusers_smd_loader`` shim to the installed class.
    Idempotent.
    """
    for cls in pipeline_classes:
        setattr(diffusers, cls.__name__, cls)
    diffusers.pipelines.__dict__.setdefault(PACKAGE, _package())
    for module in (pipeline_utils, pipeline_loading_utils):
        original = getattr(module, "_get_pipeline_class", None)
        if original is None:
            warnings.warn(
                "diffusers has no `_get_pipeline_class`; folders saved by diffusers-smd then load only with "
                "`trust_remote_code=True` or `SMDPipeline.from_pretrained`.",
                stacklevel=2,
            )
            continue
        if not getattr(original, "__diffusers_smd_wrapped__", False):
            module._get_pipeline_class = _resolve_installed_pipeline(original)
