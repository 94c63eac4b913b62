"""Publish a saved pipeline folder to the Hugging Face Hub: ``diffusers-smd publish`` and ``--push_to_hub``.

:func:`publish` validates its arguments, then stages the upload in a fresh folder (:func:`stage_upload`: the
folder's files minus ``ignore_patterns``, the model card of :mod:`diffusers_smd.model_card` as README.md and,
for diffusers-smd pipelines, the ``trust_remote_code`` loading shims), checks it, and hands it to
``huggingface_hub``'s ``create_repo`` and ``upload_folder``; a dry run renames it to ``dry_run_dir`` instead.
The user's folder is never modified. Refused before anything is uploaded: a symbolic link that leads
outside the folder, a folder without ``*.safetensors`` weights, a corrupt JSON file (named), a staged file
that contains the token. The token is never printed, logged or written, and is removed from Hub errors.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .model_card import SavedPipeline, render_model_card

__all__ = [
    "DEFAULT_IGNORE_PATTERNS",
    "PublishError",
    "PublishResult",
    "check_repo_id",
    "publish",
    "render_model_card",
    "stage_upload",
]

logger = logging.getLogger(__name__)

#: fnmatch patterns of folder-relative POSIX paths never uploaded (matched as ``huggingface_hub`` does):
#: checkpoints (resume state), checkpoints being written, TensorBoard logs, pickled weights, caches.
DEFAULT_IGNORE_PATTERNS: tuple[str, ...] = (
    *("checkpoint-*", "*/checkpoint-*", ".tmp-checkpoint-*", "*/.tmp-checkpoint-*", "logs/*"),
    *("*.ckpt", "*.pt", "*.pth", "*.bin", "*.pkl", "__pycache__/*", "*/__pycache__/*", "*.pyc", ".DS_Store"),
)


class PublishError(RuntimeError):
    """The Hub refused or failed the upload. The message carries the Hub's own error text (token removed)."""


@dataclass(frozen=True)
class PublishResult:
    """What :func:`publish` did: the uploaded (or, for a dry run, staged) files and the Hub's answers."""

    repo_id: str
    files: tuple[str, ...]
    dry_run_dir: Path | None = None
    repo_url: str | None = None
    commit_url: str | None = None


def check_repo_id(repo_id: object, *, name: str = "repo_id") -> str:
    """``repo_id`` if it is a valid ``namespace/name`` Hub model id, else ValueError naming ``name`` (a flag)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(
            f"{name} must be 'namespace/name' (your user or organisation, then the model name, e.g. "
            f"'your-username/smd-digits'), got {repo_id!r}"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"{name}={repo_id!r} is not a valid Hub repo id: {err}") from None
    return repo_id


def _files_to_upload(folder: Path, ignore_patterns: Sequence[str]) -> list[str]:
    """The folder-relative paths to upload; refuses links that lead outside ``folder`` and a folder without weights."""
    from huggingface_hub.utils import filter_repo_objects

    def ignored(relative: str) -> bool:
        return not list(filter_repo_objects([relative], ignore_patterns=list(ignore_patterns)))

    root, kept = folder.resolve(), []
    for current, dirs, files in os.walk(folder, followlinks=True):
        here = Path(current)
        wanted = {n: (here / n).relative_to(folder).as_posix() + "/" * (n in dirs) for n in [*dirs, *files]}
        wanted = {name: relative for name, relative in wanted.items() if not ignored(relative)}
        for name, relative in wanted.items():
            if not (here / name).resolve().is_relative_to(root):
                raise ValueError(
                    f"{relative.rstrip('/')} in the folder to publish is a symbolic link to {(here / name).resolve()}, "
                    "outside the folder; replace it by a copy of what it points to, or remove it (nothing was uploaded)"
                )
        # Walk the folders not ignored, except a link back to a folder above (a loop).
        dirs[:] = [d for d in dirs if d in wanted and not here.resolve().is_relative_to((here / d).resolve())]
        kept += [wanted[name] for name in files if name in wanted]
    if not any(name.endswith(".safetensors") for name in kept):
        raise ValueError(
            f"{folder} holds no weights to upload (no *.safetensors file outside the ignore patterns; pickled "
            "*.bin / *.pt / *.ckpt weights are never uploaded); save the pipeline with save_pretrained first"
        )
    return sorted(kept)


def stage_upload(
    folder: str | os.PathLike,
    repo_id: str,
    staging: str | os.PathLike,
    *,
    ignore_patterns: Sequence[str] = DEFAULT_IGNORE_PATTERNS,
    license: str = "apache-2.0",
    overwrite_card: bool = False,
) -> tuple[str, ...]:
    """Write into the new or empty folder ``staging`` exactly what :func:`publish` uploads; return its files.

    The files of ``folder`` minus ``ignore_patterns`` (links that lead outside refused), the loading shims
    of a diffusers-smd pipeline and the model card as README.md (a README.md already in ``folder`` is kept
    unless ``overwrite_card``; the card is rendered either way, so a corrupt run file is always reported).
    """
    folder, staging = Path(folder), Path(staging)
    saved = SavedPipeline.read(folder)
    for name in _files_to_upload(folder, ignore_patterns):
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / name, staging / name)
    if saved.uses_package:
        from .pipelines import write_loading_shims

        write_loading_shims(staging)
    try:  # rendered from the staged files (what is uploaded); an error names the user's file
        card = render_model_card(staging, repo_id, license=license)
    except ValueError as error:
        raise ValueError(str(error).replace(str(staging), str(folder))) from None
    if (staging / "README.md").is_file() and not overwrite_card:
        logger.info(
            "Keeping the README.md of %s as the model card (overwrite_card=True replaces it).", folder
        )
    else:
        card.save(staging / "README.md")
    return tuple(sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()))


def _check_arguments(folder, repo_id, private, commit_message, token, dry_run_dir, ignore_patterns, license):
    if not isinstance(folder, str | os.PathLike):
        raise TypeError(f"folder must be a path to a saved pipeline folder, got {type(folder).__name__}")
    SavedPipeline.read(folder)  # a pipeline folder with a readable model_index.json
    check_repo_id(repo_id)
    if not isinstance(private, bool):
        raise TypeError(f"private must be True or False, got {private!r}")
    if commit_message is not None and (not isinstance(commit_message, str) or not commit_message.strip()):
        raise ValueError(f"commit_message must be a non-empty string or None, got {commit_message!r}")
    if token is not None and not isinstance(token, str):
        raise TypeError("token must be a string or None (None: use HF_TOKEN or the saved login)")
    if isinstance(ignore_patterns, str) or not all(isinstance(p, str) for p in ignore_patterns):
        raise TypeError(
            "ignore_patterns must be a sequence of fnmatch pattern strings, e.g. ('checkpoint-*',)"
        )
    if not isinstance(license, str) or not license.strip():
        raise ValueError(f"license must be a non-empty string such as 'apache-2.0', got {license!r}")
    if dry_run_dir is not None:
        dry = Path(dry_run_dir)
        if dry.exists() and (not dry.is_dir() or any(dry.iterdir())):
            raise ValueError(
                f"dry_run_dir={str(dry)!r} already exists and is not an empty folder; choose a new path "
                "(nothing is ever overwritten)"
            )
        if dry.resolve().is_relative_to(Path(folder).resolve()):
            raise ValueError(f"dry_run_dir={str(dry)!r} must not be inside folder={str(folder)!r}")


def _secrets(token: str | None) -> list[str]:
    """The token strings that must never leave this process: the argument and the resolved login."""
    from huggingface_hub import get_token

    return [s for s in {token, get_token()} if s and len(s) >= 8]  # a very short "token" matches anything


def _check_no_secret_in_files(staging: Path, secrets: Sequence[str], chunk: int = 1 << 20) -> None:
    """Refuse to upload when a staged file contains the token (read in chunks that overlap by a token)."""
    needles = [s.encode() for s in secrets]
    for path in sorted(p for p in staging.rglob("*") if p.is_file() and needles):
        with open(path, "rb") as handle:
            tail = b""
            while block := handle.read(chunk):
                if any(needle in tail + block for needle in needles):
                    raise ValueError(
                        f"{path.relative_to(staging).as_posix()} in the folder to publish contains your Hugging "
                        "Face token; remove it from that file before publishing (nothing was uploaded)"
                    )
                tail = (tail + block)[-max(map(len, needles)) :]


def publish(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    dry_run_dir: str | os.PathLike | None = None,
    ignore_patterns: Sequence[str] = DEFAULT_IGNORE_PATTERNS,
    license: str = "apache-2.0",
    overwrite_card: bool = False,
) -> PublishResult:
    """Upload the saved pipeline ``folder`` to the Hub repo ``repo_id`` with a generated model card.

    ``private`` creates a new repo private (an existing one keeps its visibility); ``commit_message``
    defaults to "Upload <pipeline class> with diffusers-smd"; ``token`` defaults to HF_TOKEN or the saved
    login; ``dry_run_dir`` (new or empty) receives the exact upload and nothing is uploaded; ``license`` is
    the card's license; ``overwrite_card`` replaces a README.md of the folder by the generated card.
    Bad arguments raise ValueError / TypeError before any work; a Hub failure raises :class:`PublishError`.
    """
    _check_arguments(folder, repo_id, private, commit_message, token, dry_run_dir, ignore_patterns, license)
    folder, secrets = Path(folder), _secrets(token)
    dry = Path(dry_run_dir) if dry_run_dir is not None else None
    if dry is not None:
        dry.parent.mkdir(parents=True, exist_ok=True)
    # A dry run stages next to dry_run_dir, so the finished folder is renamed into place (never half written).
    with tempfile.TemporaryDirectory(prefix=".diffusers-smd-publish-", dir=dry and dry.parent) as tmp:
        staging = Path(tmp) / "upload"
        options = {"ignore_patterns": ignore_patterns, "license": license, "overwrite_card": overwrite_card}
        files = stage_upload(folder, repo_id, staging, **options)
        _check_no_secret_in_files(staging, secrets)
        if dry is not None:
            if dry.exists():
                dry.rmdir()
            staging.rename(dry)
            logger.info("Dry run: wrote the %d files that would be uploaded to %s.", len(files), dry)
            return PublishResult(repo_id=repo_id, files=files, dry_run_dir=dry)
        message = commit_message or f"Upload {SavedPipeline.read(folder).pipeline_class} with diffusers-smd"
        repo_url, commit_url = _upload(staging, repo_id, private, message, token, secrets)
    logger.info("Published %d files to %s", len(files), repo_url)
    return PublishResult(repo_id=repo_id, files=files, repo_url=repo_url, commit_url=commit_url)


def _upload(staging: Path, repo_id: str, private: bool, message: str, token, secrets) -> tuple[str, str]:
    from huggingface_hub import create_repo, upload_folder

    step = "creating the repo"
    try:
        # private=False leaves the visibility to the Hub's default (public unless the organisation says otherwise).
        repo_url = create_repo(repo_id, private=True if private else None, exist_ok=True, token=token)
        step = "uploading the files"
        commit = upload_folder(repo_id=repo_id, folder_path=staging, commit_message=message, token=token)
    except Exception as err:
        text = f"{type(err).__name__}: {err}"
        for secret in secrets:
            text = text.replace(secret, "***")
        error = PublishError(
            f"Publishing to the Hub repo {repo_id!r} failed while {step}. The Hub said: {text}\n"
            "Your pipeline folder was not modified."
        )
        # The original exception stays the cause unless it carries the token.
        leaked = any(secret in str(err) or secret in repr(err) for secret in secrets)
        raise error from (None if leaked else err)
    return str(repo_url), commit.commit_url
