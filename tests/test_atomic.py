"""Atomic writes: a failure leaves the old content (or nothing), never a half-written file or folder."""

import json

import numpy as np
import pytest

from diffusers_smd import atomic


def test_folder_publication_leaves_nothing_on_failure_and_never_overwrites(tmp_path):
    final = tmp_path / "models" / "m"

    def failing(folder):
        (folder / "partial.bin").write_bytes(b"x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic.replace_folder(failing, final)
    assert not final.exists() and list((tmp_path / "models").iterdir()) == []
    atomic.replace_folder(lambda folder: (folder / "ok.json").write_text("{}"), final)
    assert (final / "ok.json").is_file()
    with pytest.raises(FileExistsError):
        atomic.replace_folder(lambda folder: None, final)


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    atomic.write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic.write_json(path, {"a": object()})  # not JSON: fails half-way through dumping
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def test_json_and_npy_round_trip_and_a_corrupt_file_is_named(tmp_path):
    atomic.write_json(tmp_path / "x.json", {"b": [1, 2], "a": None})
    assert atomic.read_json(tmp_path / "x.json") == {"a": None, "b": [1, 2]}
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    atomic.write_npy(tmp_path / "x.npy", array)
    assert np.array_equal(np.load(tmp_path / "x.npy", allow_pickle=False), array)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        atomic.read_json(tmp_path / "bad.json")
