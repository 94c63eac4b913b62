"""Publish a saved diffusers-smd pipeline folder to the Hugging Face Hub.

One implementation, two entry points:

* ``diffusers-smd publish DIR --repo-id NAMESPACE/NAME`` calls :func:`publish_main`;
* ``training/train_smd.py --push_to_hub`` calls :func:`publish` at the end of training.

The public function::

    publish(
        folder,                      # the saved pipeline folder (model_index.json, unet/, scheduler/, run files)
        repo_id,                     # "namespace/name"
        *,
        private=False,               # create the repo private (False: the Hub's default); an existing repo keeps its visibility
        commit_message=None,         # default: "Upload <pipeline class> with diffusers-smd"
        token=None,                  # default: HF_TOKEN or the saved `hf auth login` token (huggingface_hub resolves it)
        dry_run_dir=None,            # write the exact upload folder there and upload nothing
        ignore_patterns=DEFAULT_IGNORE_PATTERNS,  # checkpoints, logs and pickled weights stay local
        license="apache-2.0",        # the card's license metadata
        overwrite_card=False,        # replace a README.md already in the folder with a generated card
    ) -> PublishResult

``check_repo_id(repo_id, name="--hub_model_id")`` validates a repo id up front (train_smd.py can
call it before training starts).

What it does: validates its arguments, then stages the upload in a fresh directory (a copy of the
folder minus ``ignore_patterns``, plus the generated ``README.md`` model card and, for SMD
pipelines, the ``trust_remote_code`` loading shims from
:func:`diffusers_smd.pipelines.write_loading_shims`). The user's folder is never modified. It then
runs ``huggingface_hub.create_repo(exist_ok=True)`` and ``upload_folder`` on the staged directory.

The token is never printed, logged or written: the staged files are checked for it before anything
is uploaded, and it is removed from any error message re-raised as :class:`PublishError`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_IGNORE_PATTERNS",
    "PublishError",
    "PublishResult",
    "publish",
    "publish_main",
    "stage_upload",
]

logger = logging.getLogger(__name__)

DEFAULT_IGNORE_PATTERNS: tuple[str, ...] = (
    "checkpoint-*",  # accelerate training checkpoints (checkpoint-500/...): resume state, not the model
    "*/checkpoint-*",
    ".tmp-checkpoint-*",  # a checkpoint being written (train_smd.py renames it when complete)
    "*/.tmp-checkpoint-*",
    "logs/*",  # TensorBoard logs of train_smd.py (--logging_dir)
    "*.ckpt",  # pickled weights: the Hub copy is safetensors only
    "*.pt",
    "*.pth",
    "*.bin",
    "*.pkl",
    "__pycache__/*",
    "*/__pycache__/*",
    "*.pyc",
    ".DS_Store",
)
"""Paths (fnmatch patterns on the folder-relative POSIX path, as huggingface_hub uses) never uploaded."""

_SCAN_CHUNK = 1 << 20


class PublishError(RuntimeError):
    """The Hub refused or failed the upload. The message carries the Hub's own error text (token removed)."""


@dataclass(frozen=True)
class PublishResult:
    """What :func:`publish` did.

    ``files``: the folder-relative POSIX paths that were (or, for a dry run, would be) uploaded.
    ``dry_run_dir``: where a dry run wrote them (``None`` after a real upload).
    ``repo_url`` / ``commit_url``: the Hub's answers after a real upload (``None`` for a dry run).
    """

    repo_id: str
    files: tuple[str, ...]
    dry_run_dir: Path | None = None
    repo_url: str | None = None
    commit_url: str | None = None


def check_repo_id(repo_id: object, *, name: str = "repo_id") -> str:
    """Return ``repo_id`` if it is a valid ``namespace/name`` Hub model id, else raise ``ValueError``.

    ``name`` is the argument or flag named in the message (train_smd.py passes ``"--hub_model_id"``
    to check it before training starts, so a typo does not surface only after the run).
    """
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


def _validate_arguments(
    folder: object,
    repo_id: object,
    private: object,
    commit_message: object,
    token: object,
    dry_run_dir: object,
    ignore_patterns: object,
) -> tuple[Path, str, Path | None, list[str]]:
    if not isinstance(folder, str | os.PathLike):
        raise TypeError(f"folder must be a path to a saved pipeline folder, got {type(folder).__name__}")
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise ValueError(
            f"folder={str(folder)!r} is not a saved pipeline folder (no model_index.json); pass the folder "
            "written by train_smd.py or SMDPipeline.save_pretrained"
        )
    repo_id = check_repo_id(repo_id)
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
    if dry_run_dir is not None:
        dry_run_dir = Path(dry_run_dir)
        if dry_run_dir.exists() and (not dry_run_dir.is_dir() or any(dry_run_dir.iterdir())):
            raise ValueError(
                f"dry_run_dir={str(dry_run_dir)!r} already exists and is not an empty folder; "
                "choose a new path (nothing is ever overwritten)"
            )
        if dry_run_dir.resolve().is_relative_to(folder.resolve()):
            raise ValueError(f"dry_run_dir={str(dry_run_dir)!r} must not be inside folder={str(folder)!r}")
    return folder, repo_id, dry_run_dir, list(ignore_patterns)


def _known_secrets(token: str | None) -> list[str]:
    """The token strings that must never leave this process: the argument and the resolved login."""
    from huggingface_hub import get_token

    secrets = [token] if token else []
    resolved = get_token()
    if resolved and resolved not in secrets:
        secrets.append(resolved)
    return [s for s in secrets if len(s) >= 8]  # a very short "token" would match arbitrary bytes


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _assert_no_secret_in_files(staging: Path, secrets: Sequence[str]) -> None:
    """Refuse to upload when a staged file contains the token (e.g. a training script saved it)."""
    if not secrets:
        return
    needles = [s.encode() for s in secrets]
    overlap = max(len(n) for n in needles)
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        with open(path, "rb") as f:
            tail = b""
            while chunk := f.read(_SCAN_CHUNK):
                window = tail + chunk
                if any(n in window for n in needles):
                    raise ValueError(
                        f"{path.relative_to(staging).as_posix()} in the folder to publish contains your Hugging Face "
                        "token; remove it from that file before publishing (nothing was uploaded)"
                    )
                tail = window[-overlap:]


def stage_upload(
    folder: str | os.PathLike,
    repo_id: str,
    staging: str | os.PathLike,
    *,
    ignore_patterns: Sequence[str] = DEFAULT_IGNORE_PATTERNS,
    license: str = "apache-2.0",
    overwrite_card: bool = False,
) -> tuple[str, ...]:
    """Write into the empty (or new) ``staging`` directory exactly what :func:`publish` uploads.

    Copies ``folder`` minus ``ignore_patterns``, writes the model card as ``README.md`` (a README.md
    already in ``folder`` is kept unless ``overwrite_card``) and, for SMD pipelines, adds the loading
    shims. Returns the staged files' relative POSIX paths, sorted.
    """
    from huggingface_hub.utils import filter_repo_objects

    from .model_card import read_run_facts, render_model_card

    folder, staging = Path(folder), Path(staging)
    relative = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    kept = list(filter_repo_objects(relative, ignore_patterns=list(ignore_patterns)))
    staging.mkdir(parents=True, exist_ok=True)
    for name in kept:
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / name, target)

    if read_run_facts(folder).is_smd_pipeline:
        from .pipelines import write_loading_shims

        write_loading_shims(staging)
    if "README.md" in kept and not overwrite_card:
        logger.info(
            "Keeping the README.md already in %s as the model card (overwrite_card=True replaces it).", folder
        )
    else:
        # Rendered from the staged copy: identical run files, plus the shims' model_index.json.
        render_model_card(staging, repo_id, license=license).save(staging / "README.md")
    return tuple(sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()))


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
    """Upload a saved pipeline folder to the Hub repo ``repo_id`` with a generated model card.

    See the module docstring for every argument. Raises ``ValueError`` / ``TypeError`` for bad
    arguments before any work, and :class:`PublishError` (with the Hub's message) when the Hub
    refuses; ``folder`` is left untouched in every case.
    """
    folder, repo_id, dry_run_path, patterns = _validate_arguments(
        folder, repo_id, private, commit_message, token, dry_run_dir, ignore_patterns
    )
    if not isinstance(license, str) or not license.strip():
        raise ValueError(f"license must be a non-empty string such as 'apache-2.0', got {license!r}")
    secrets = _known_secrets(token)

    if dry_run_path is not None:
        created = not dry_run_path.exists()
        try:
            files = stage_upload(
                folder,
                repo_id,
                dry_run_path,
                ignore_patterns=patterns,
                license=license,
                overwrite_card=overwrite_card,
            )
            _assert_no_secret_in_files(dry_run_path, secrets)
        except BaseException:
            # The folder was new or empty: removing what this call wrote loses nothing of the user's.
            for child in dry_run_path.iterdir() if dry_run_path.exists() else ():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            if created and dry_run_path.exists():
                dry_run_path.rmdir()
            raise
        logger.info(
            "Dry run: wrote the %d files that would be uploaded to %s; nothing was uploaded.",
            len(files),
            dry_run_path,
        )
        return PublishResult(repo_id=repo_id, files=files, dry_run_dir=dry_run_path)

    with tempfile.TemporaryDirectory(prefix="diffusers-smd-publish-") as tmp:
        staging = Path(tmp) / "upload"
        files = stage_upload(
            folder, repo_id, staging, ignore_patterns=patterns, license=license, overwrite_card=overwrite_card
        )
        _assert_no_secret_in_files(staging, secrets)
        message = commit_message or f"Upload {_pipeline_class(folder)} with diffusers-smd"
        repo_url, commit_url = _upload(
            staging, repo_id, private=private, message=message, token=token, secrets=secrets
        )
    logger.info("Published %d files to %s", len(files), repo_url)
    return PublishResult(repo_id=repo_id, files=files, repo_url=repo_url, commit_url=commit_url)


def _pipeline_class(folder: Path) -> str:
    name = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))["_class_name"]
    return name[-1] if isinstance(name, list) else name


def _upload(
    staging: Path, repo_id: str, *, private: bool, message: str, token: str | None, secrets: Sequence[str]
) -> tuple[str, str]:
    from huggingface_hub import create_repo, upload_folder

    step = "creating the repo"
    try:
        # private=False leaves the visibility to the Hub's default (public unless the organisation defaults to private).
        repo_url = create_repo(repo_id, private=True if private else None, exist_ok=True, token=token)
        step = "uploading the files"
        commit = upload_folder(repo_id=repo_id, folder_path=staging, commit_message=message, token=token)
    except Exception as err:
        text = _scrub(f"{type(err).__name__}: {err}", secrets)
        error = PublishError(
            f"Publishing to the Hub repo {repo_id!r} failed while {step}. The Hub said: {text}\n"
            "Your pipeline folder was not modified."
        )
        # Keep the original exception as the cause unless its text carries a secret.
        if any(secret in str(err) or secret in repr(err) for secret in secrets):
            raise error from None
        raise error from err
    return str(repo_url), commit.commit_url


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffusers-smd publish",
        description=(
            "Upload a saved SMD / E-TSDM pipeline folder to the Hugging Face Hub, with a model card written "
            "from the run's real config and metrics and the loading shims that make "
            "DiffusionPipeline.from_pretrained(repo, trust_remote_code=True) work. Log in first with "
            "`hf auth login` or set HF_TOKEN."
        ),
    )
    parser.add_argument(
        "folder", help="The saved pipeline folder (written by train_smd.py or save_pretrained)."
    )
    parser.add_argument(
        "--repo-id",
        required=True,
        help="Target Hub repo as NAMESPACE/NAME, e.g. your-username/smd-digits. Created if it does not exist.",
    )
    parser.add_argument(
        "--private",
        action="store_true",
        help="Create the repo as private. Only applies when the repo is created; an existing repo keeps its visibility.",
    )
    parser.add_argument(
        "--commit-message",
        default=None,
        help="Message of the Hub commit (default: 'Upload <pipeline class> with diffusers-smd').",
    )
    parser.add_argument(
        "--dry-run",
        metavar="DIR",
        default=None,
        help="Upload nothing; write the exact folder that would be uploaded (files, README.md card, shims) "
        "to DIR for inspection. DIR must not exist or be empty.",
    )
    parser.add_argument(
        "--ignore-pattern",
        action="append",
        default=[],
        metavar="PATTERN",
        help="Extra fnmatch pattern of folder-relative paths to leave out (repeatable), added to the defaults: "
        + ", ".join(DEFAULT_IGNORE_PATTERNS),
    )
    parser.add_argument(
        "--license",
        default="apache-2.0",
        help="License identifier written in the card metadata (default: apache-2.0). Choose one your data allows.",
    )
    parser.add_argument(
        "--overwrite-card",
        action="store_true",
        help="Replace a README.md already present in the folder with the generated model card "
        "(by default a README.md you wrote yourself is uploaded as is).",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="Hugging Face access token with write access. Discouraged: it can end up in your shell history. "
        "Prefer `hf auth login` or the HF_TOKEN environment variable, which are used when this is omitted.",
    )
    return parser


def publish_main(argv: Sequence[str] | None = None) -> int:
    """``diffusers-smd publish``: parse ``argv`` (without the subcommand name) and run :func:`publish`.

    Returns the process exit status: 0 on success, 1 when the Hub refused; bad flags exit with 2
    through argparse.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        result = publish(
            args.folder,
            args.repo_id,
            private=args.private,
            commit_message=args.commit_message,
            token=args.token,
            dry_run_dir=args.dry_run,
            ignore_patterns=(*DEFAULT_IGNORE_PATTERNS, *args.ignore_pattern),
            license=args.license,
            overwrite_card=args.overwrite_card,
        )
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if result.dry_run_dir is not None:
        print(
            f"Dry run: nothing uploaded. The {len(result.files)} files that would be uploaded are in {result.dry_run_dir}:"
        )
    else:
        print(f"Published {len(result.files)} files to {result.repo_url} ({result.commit_url}):")
    for name in result.files:
        print(f"  {name}")
    return 0
