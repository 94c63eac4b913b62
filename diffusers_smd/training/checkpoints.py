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

import json
import logging
import os
import re
import shutil
import struct
import zipfile

from ..atomic import read_json, write_json

__all__ = [
    "CHECKPOINT_PREFIX",
    "RUN_STATE_FILE",
    "TEMPORARY_PREFIX",
    "checkpoint_problems",
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
logger = logging.getLogger(__name__)
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


def checkpoint_problems(checkpoint: str) -> list[str]:
    """What makes ``checkpoint`` unusable (empty when it can be resumed): unreadable or truncated files.

    accelerate's state files (``*.bin``, ``random_states_*.pkl``) are zip archives written by ``torch.save``:
    their members' CRCs are checked without unpickling them. Random-state files are loaded the way accelerate
    loads them (``weights_only``) and must hold the RNG states, because accelerate ignores an unreadable one
    and the resumed run would then silently differ. Safetensors weights must be as long as their header says.
    """
    problems = []
    for name in sorted(os.listdir(checkpoint)):
        path = os.path.join(checkpoint, name)
        if name.endswith((".bin", ".pkl")) and os.path.isfile(path):
            reason = _zip_problem(path)
            if reason is None and name.startswith("random_states"):
                reason = _random_states_problem(path)
            if reason:
                problems.append(f"{name}: {reason}")
        elif os.path.isdir(path):
            for weights in sorted(f for f in os.listdir(path) if f.endswith(".safetensors")):
                reason = _safetensors_problem(os.path.join(path, weights))
                if reason:
                    problems.append(f"{name}/{weights}: {reason}")
    return problems


def _zip_problem(path: str) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"not a readable torch file ({error})"
    return f"corrupt member {bad}" if bad else None


def _random_states_problem(path: str) -> str | None:
    from accelerate.utils import load

    try:
        states = load(path)
    except Exception as error:  # any unpickling failure means accelerate would skip it silently
        return f"cannot be loaded ({type(error).__name__})"
    missing = {"random_state", "numpy_random_seed", "torch_manual_seed"} - set(states or {})
    return f"missing {sorted(missing)}" if missing else None


def _safetensors_problem(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            header_length = struct.unpack("<Q", handle.read(8))[0]
            header = json.loads(handle.read(header_length))
    except (struct.error, ValueError, OSError) as error:
        return f"unreadable header ({error})"
    data_end = max(
        (entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0
    )
    expected = 8 + header_length + data_end
    size = os.path.getsize(path)
    return None if size == expected else f"truncated ({size} of {expected} bytes)"


def resolve_resume_checkpoint(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """The folder ``--resume_from_checkpoint`` names, or None to start fresh.

    ``"latest"`` is the highest-step complete and readable checkpoint in ``output_dir`` (None when there is
    none, as in diffusers); a newer one with unreadable files (:func:`checkpoint_problems`) is skipped with a
    warning that names it and its files, so a run resumes from the previous good one. Any other value is a
    path, or a checkpoint name inside ``output_dir``; one that points nowhere, is incomplete or is unreadable
    raises ValueError naming the flag.
    """
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        for checkpoint in reversed(list_checkpoints(output_dir)):
            problems = checkpoint_problems(checkpoint)
            if not problems:
                return checkpoint
            logger.warning(
                "--resume_from_checkpoint latest: skipping %s, which cannot be resumed (%s); trying the one before",
                checkpoint,
                "; ".join(problems),
            )
        return None
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
            problems = checkpoint_problems(candidate)
            if problems:
                raise ValueError(
                    f"--resume_from_checkpoint {resume_from_checkpoint!r}: {candidate} cannot be resumed: "
                    + "; ".join(problems)
                    + ". Use an earlier checkpoint, or 'latest' to take the newest readable one"
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
    try:
        accelerator.save_state(temporary)
    except (OSError, RuntimeError) as error:  # a full disk surfaces from torch.save as "basic_ios::clear"
        shutil.rmtree(temporary, ignore_errors=True)
        free = shutil.disk_usage(output_dir).free
        raise OSError(
            f"could not write {CHECKPOINT_PREFIX}{step} into {output_dir} ({error}); {free / 2**30:.2f} GiB are "
            f"free there. The previous checkpoint is untouched: free some space, then resume with "
            f"--resume_from_checkpoint latest"
        ) from error
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
