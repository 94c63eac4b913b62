"""Build a real Hugging Face Hub cache entry from a local folder, for loading repo ids offline in tests.

Layout (as ``huggingface_hub`` writes it when it downloads ``repo_id``)::

    <cache_dir>/models--<user>--<name>/
        blobs/<sha256 for LFS-type files, git blob sha1 otherwise>
        snapshots/<commit>/<path>   -> ../../blobs/<...> (relative symlinks; copies where links fail)
        refs/<revision>             the commit hash
        trees/<commit>.json         the repo's file listing (what ``get_cached_repo_tree`` reads)

With ``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE=<cache_dir>``, ``DiffusionPipeline.from_pretrained(repo_id)``
then goes through its normal repo-id path: file listing, custom-file checks, snapshot lookup.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt", ".png", ".npz")


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a file: sha1 of ``b"blob <size>\\0" + content``."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def build_hub_cache(
    folder: str | os.PathLike, repo_id: str, cache_dir: str | os.PathLike, revision: str = "main"
) -> str:
    """Store every file under ``folder`` as revision ``revision`` of model repo ``repo_id`` in ``cache_dir``.

    Returns the commit hash (derived from the files, so the same folder gives the same commit).
    """
    folder = Path(folder)
    if repo_id.count("/") != 1:
        raise ValueError(f"`repo_id` must look like 'user/name'; got {repo_id!r}.")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    if not files:
        raise ValueError(f"`folder` {folder} holds no files.")
    storage = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    entries: dict[str, dict] = {}
    blobs: dict[str, str] = {}
    for path in files:
        relative = path.relative_to(folder).as_posix()
        content = path.read_bytes()
        entry: dict = {"size": len(content), "blob_id": git_blob_sha1(content)}
        if relative.endswith(LFS_SUFFIXES):
            entry["lfs_sha256"] = hashlib.sha256(content).hexdigest()
            entry["lfs_size"] = len(content)
        entries[relative] = entry
        blobs[relative] = entry.get("lfs_sha256", entry["blob_id"])
    commit = hashlib.sha1(json.dumps(entries, sort_keys=True).encode()).hexdigest()

    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = storage / "snapshots" / commit
    for path in files:
        relative = path.relative_to(folder).as_posix()
        blob = storage / "blobs" / blobs[relative]
        if not blob.exists():
            shutil.copyfile(path, blob)
        target = snapshot / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        try:
            target.symlink_to(os.path.relpath(blob, target.parent))
        except OSError:
            shutil.copyfile(blob, target)
    (storage / "refs").mkdir(exist_ok=True)
    (storage / "refs" / revision).write_text(commit)
    (storage / "trees").mkdir(exist_ok=True)
    tree = {"format_version": 1, "files": entries}
    (storage / "trees" / f"{commit}.json").write_text(json.dumps(tree, indent=1))
    return commit
