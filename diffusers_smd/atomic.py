"""Atomic file writes: a reader (or a rerun after kill -9) sees either the old file or the new one, never half.

Each writer writes to a temporary name in the target's folder, flushes it to disk, and renames it into place
(``os.replace`` is atomic on one file system). Errors name the file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_json", "replace_folder", "write_bytes", "write_json", "write_npy"]


def _write(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; results are ordinary readable files
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise OSError(f"could not write {path}: {error.strerror or error}") from error
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, payload: Any, *, indent: int = 2, sort_keys: bool = True) -> None:
    """Write ``payload`` as JSON (with a final newline) to ``path``, atomically."""

    def dump(handle) -> None:
        json.dump(payload, handle, indent=indent, sort_keys=sort_keys)
        handle.write("\n")

    _write(path, dump, "w")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path``, atomically."""
    _write(path, lambda handle: handle.write(data), "wb")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` to ``path``, atomically (load with ``allow_pickle=False``)."""
    _write(path, lambda handle: np.save(handle, array, allow_pickle=False), "wb")


def read_json(path: str | os.PathLike) -> Any:
    """Load a JSON file; a file that is not valid JSON raises ValueError naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); move it away or repair it") from error


def replace_folder(build: Callable[[Path], None], final: str | os.PathLike) -> None:
    """Run ``build(temporary_folder)`` and rename it to ``final``, which must not exist yet.

    A folder that exists is refused rather than overwritten, so nothing finished is ever lost.
    """
    final = Path(final)
    if final.exists():
        raise FileExistsError(f"{final} exists already; remove it to rebuild it")
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        build(temporary)
        os.rename(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
