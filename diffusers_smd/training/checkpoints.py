"""Training checkpoints that a killed process can never leave half-written.

Layout and names follow diffusers' ``train_unconditional.py``: ``<output_dir>/checkpoint-<step>``
folders written by ``accelerator.save_state`` and pruned by ``--checkpoints_total_limit``;
``--resume_from_checkpoint latest`` picks the highest step. The difference: a checkpoint is
first written to a hidden temporary folder (``.tmp-checkpoint-<step>``) and renamed into place
only once every process has finished writing. A rename is atomic, so a ``checkpoint-<step>``
folder is always complete, and an interrupted write leaves only a temporary folder that
:func:`list_checkpoints` (and therefore ``latest``) ignores.
"""

from __future__ import annotations

import os
import re
import shutil

from ..atomic import read_json, write_json

__all__ = [
    "CHECKPOINT_PREFIX",
    "RUN_STATE_FILE",
    "TEMPORARY_PREFIX",
    "checkpoint_step",
    "list_checkpoints",
    "read_run_state",
    "prune_checkpoints",
    "resolve_resume_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_PREFIX = "checkpoint-"
TEMPORARY_PREFIX = ".tmp-checkpoint-"
RUN_STATE_FILE = "run_state.json"
_CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def checkpoint_step(path: str) -> int:
    """The global step encoded in a ``checkpoint-<step>`` folder name."""
    match = _CHECKPOINT_NAME.match(os.path.basename(os.path.normpath(path)))
    if match is None:
        raise ValueError(f"{path!r} is not named {CHECKPOINT_PREFIX}<step>")
    return int(match.group(1))


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoint folders in ``output_dir``, oldest (lowest step) first.

    Only folders named exactly ``checkpoint-<step>`` that hold their ``run_state.json`` (written last,
    inside the temporary folder, before the rename) count; temporary folders of an interrupted save and
    empty or hand-made folders are ignored.
    """
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_NAME.match(name)
        if match and os.path.isfile(os.path.join(output_dir, name, RUN_STATE_FILE)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return [path for _, path in sorted(found)]


def resolve_resume_checkpoint(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """The folder ``--resume_from_checkpoint`` names, or None to start fresh.

    ``"latest"`` is the highest-step complete checkpoint in ``output_dir`` (None when there is
    none, as in diffusers). Any other value is a path, or a checkpoint name inside
    ``output_dir``; a value that points nowhere raises ValueError naming the flag.
    """
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    for candidate in (
        resume_from_checkpoint,
        os.path.join(output_dir, os.path.basename(resume_from_checkpoint)),
    ):
        if os.path.isdir(candidate) and _CHECKPOINT_NAME.match(os.path.basename(os.path.normpath(candidate))):
            if not os.path.isfile(os.path.join(candidate, RUN_STATE_FILE)):
                raise ValueError(
                    f"--resume_from_checkpoint {resume_from_checkpoint!r}: {candidate} is incomplete (no "
                    f"{RUN_STATE_FILE}); its save was interrupted. Use an earlier checkpoint or 'latest'"
                )
            return candidate
    raise ValueError(
        f"--resume_from_checkpoint {resume_from_checkpoint!r} points to no checkpoint folder "
        f"(expected 'latest', a path to a {CHECKPOINT_PREFIX}<step> folder, or the name of one in "
        f"--output_dir {output_dir!r}; found: {[os.path.basename(p) for p in list_checkpoints(output_dir)]})"
    )


def prune_checkpoints(output_dir: str, total_limit: int | None) -> list[str]:
    """Delete the oldest complete checkpoints so at most ``total_limit`` remain; return the removed ones."""
    if total_limit is None:
        return []
    if total_limit < 1:
        raise ValueError(f"--checkpoints_total_limit must be at least 1, got {total_limit}")
    checkpoints = list_checkpoints(output_dir)
    removed = checkpoints[: max(0, len(checkpoints) - total_limit)]
    for path in removed:
        shutil.rmtree(path)
    return removed


def read_run_state(checkpoint: str) -> dict:
    """The small JSON record :func:`save_checkpoint` stored next to the accelerate state (empty if none)."""
    path = os.path.join(checkpoint, RUN_STATE_FILE)
    if not os.path.isfile(path):
        return {}
    return read_json(path)


def save_checkpoint(
    accelerator, output_dir: str, step: int, total_limit: int | None = None, run_state: dict | None = None
) -> str:
    """Save the full training state as ``<output_dir>/checkpoint-<step>``, atomically.

    Every process calls this (``accelerator.save_state`` writes per-process RNG states).
    The state goes to ``.tmp-checkpoint-<step>`` first; after all processes are done the
    main process renames it into place, and only then prunes old checkpoints down to
    ``total_limit``, so the newest good checkpoint is never deleted before its successor exists.
    ``run_state`` (JSON-safe) is stored as ``run_state.json`` inside the checkpoint.
    """
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    temporary = os.path.join(output_dir, f"{TEMPORARY_PREFIX}{step}")
    if accelerator.is_main_process and os.path.exists(temporary):
        shutil.rmtree(temporary)  # left over from an interrupted save
    accelerator.wait_for_everyone()
    os.makedirs(temporary, exist_ok=True)
    accelerator.save_state(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(os.path.join(temporary, RUN_STATE_FILE), {"global_step": step, **(run_state or {})})
        if os.path.exists(final):
            stale = os.path.join(output_dir, f"{TEMPORARY_PREFIX}{step}-replaced")
            shutil.rmtree(stale, ignore_errors=True)
            os.rename(final, stale)
            os.rename(temporary, final)
            shutil.rmtree(stale)
        else:
            os.rename(temporary, final)
        _fsync_directory(output_dir)
        prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


def _fsync_directory(path: str) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
