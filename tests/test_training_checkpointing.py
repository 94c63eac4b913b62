"""Atomic checkpoints: names, `latest`, pruning, and what an interrupted save leaves behind."""

import json
import os
import random

import numpy as np
import pytest
import torch

from diffusers_smd.training.checkpoints import (
    checkpoint_step,
    list_checkpoints,
    prune_checkpoints,
    read_run_state,
    resolve_resume_checkpoint,
    save_checkpoint,
)


class FakeAccelerator:
    """Stands in for accelerate.Accelerator: save_state writes two files (or dies half-way)."""

    is_main_process = True

    def __init__(self, die_after_first_file=False):
        self.die_after_first_file = die_after_first_file

    def wait_for_everyone(self):
        pass

    def save_state(self, output_dir):
        torch.save({"state": torch.zeros(2)}, os.path.join(output_dir, "optimizer.bin"))
        if self.die_after_first_file:
            raise KeyboardInterrupt("killed while writing")
        rng = {
            "random_state": random.getstate(),
            "numpy_random_seed": np.random.get_state(),
            "torch_manual_seed": torch.get_rng_state(),
        }
        torch.save(rng, os.path.join(output_dir, "random_states_0.pkl"))


def make_dirs(root, *names):
    """Checkpoint-like folders; those named checkpoint-<step> are complete (they hold run_state.json)."""
    for name in names:
        os.makedirs(root / name)
        if name.startswith("checkpoint-"):
            (root / name / "run_state.json").write_text("{}")


def test_list_checkpoints_sorts_numerically_and_ignores_everything_else(tmp_path):
    make_dirs(
        tmp_path,
        "checkpoint-9",
        "checkpoint-10",
        "checkpoint-2",
        ".tmp-checkpoint-11",
        "checkpoint-x",
        "logs",
    )
    (tmp_path / "checkpoint-12").write_text("a file, not a folder")
    os.makedirs(tmp_path / "checkpoint-999")  # empty: a hand-made or half-copied folder is not a checkpoint
    names = [os.path.basename(p) for p in list_checkpoints(str(tmp_path))]
    assert names == ["checkpoint-2", "checkpoint-9", "checkpoint-10"]
    assert checkpoint_step(str(tmp_path / "checkpoint-10")) == 10


def test_latest_is_the_highest_complete_checkpoint_and_none_when_empty(tmp_path):
    assert resolve_resume_checkpoint("latest", str(tmp_path)) is None
    assert resolve_resume_checkpoint(None, str(tmp_path)) is None
    make_dirs(tmp_path, "checkpoint-5", "checkpoint-20", ".tmp-checkpoint-30")
    assert resolve_resume_checkpoint("latest", str(tmp_path)) == str(tmp_path / "checkpoint-20")


def test_resume_accepts_a_path_or_a_name_inside_output_dir(tmp_path):
    make_dirs(tmp_path, "checkpoint-5")
    assert resolve_resume_checkpoint(str(tmp_path / "checkpoint-5"), "elsewhere") == str(
        tmp_path / "checkpoint-5"
    )
    assert resolve_resume_checkpoint("checkpoint-5", str(tmp_path)) == str(tmp_path / "checkpoint-5")


@pytest.mark.parametrize("value", ["checkpoint-7", "/no/such/checkpoint-3", "latest-ish"])
def test_resume_pointing_nowhere_names_the_flag(tmp_path, value):
    make_dirs(tmp_path, "checkpoint-5")
    with pytest.raises(ValueError, match="--resume_from_checkpoint"):
        resolve_resume_checkpoint(value, str(tmp_path))


def test_prune_keeps_the_newest(tmp_path):
    make_dirs(tmp_path, "checkpoint-1", "checkpoint-3", "checkpoint-20", "checkpoint-100")
    removed = prune_checkpoints(str(tmp_path), 2)
    assert sorted(os.path.basename(p) for p in removed) == ["checkpoint-1", "checkpoint-3"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-100", "checkpoint-20"]
    assert prune_checkpoints(str(tmp_path), None) == []
    with pytest.raises(ValueError, match="--checkpoints_total_limit"):
        prune_checkpoints(str(tmp_path), 0)


def test_save_renames_into_place_then_prunes(tmp_path):
    accelerator = FakeAccelerator()
    for step in (1, 2, 3):
        save_checkpoint(accelerator, str(tmp_path), step, total_limit=2, run_state={"seed": 7})
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-2", "checkpoint-3"]
    assert sorted(os.listdir(tmp_path / "checkpoint-3")) == [
        "optimizer.bin",
        "random_states_0.pkl",
        "run_state.json",
    ]
    assert read_run_state(str(tmp_path / "checkpoint-3")) == {"global_step": 3, "seed": 7}
    assert read_run_state(str(tmp_path)) == {}


def test_interrupted_save_leaves_latest_on_the_previous_complete_checkpoint(tmp_path):
    save_checkpoint(FakeAccelerator(), str(tmp_path), 4, total_limit=1)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(FakeAccelerator(die_after_first_file=True), str(tmp_path), 8, total_limit=1)
    assert os.path.isdir(tmp_path / ".tmp-checkpoint-8")  # the partial write is there ...
    assert resolve_resume_checkpoint("latest", str(tmp_path)) == str(
        tmp_path / "checkpoint-4"
    )  # ... and ignored
    assert os.listdir(tmp_path / "checkpoint-4")  # and the good one was not pruned
    # The next save of the same step replaces the partial folder.
    save_checkpoint(FakeAccelerator(), str(tmp_path), 8, total_limit=1)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-8"]
    assert json.loads((tmp_path / "checkpoint-8" / "run_state.json").read_text())["global_step"] == 8


def test_saving_an_existing_step_again_replaces_it(tmp_path):
    save_checkpoint(FakeAccelerator(), str(tmp_path), 3)
    (tmp_path / "checkpoint-3" / "stale.txt").write_text("old")
    save_checkpoint(FakeAccelerator(), str(tmp_path), 3)
    assert not (tmp_path / "checkpoint-3" / "stale.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-3"]


@pytest.mark.parametrize("damage", ["optimizer", "random_states", "weights"])
def test_latest_skips_an_unreadable_checkpoint_and_a_named_one_is_refused(tmp_path, damage):
    """Issue 17: a corrupt optimizer.bin gave torch's pickle error with no fallback; random bytes in
    random_states_0.pkl were ignored by accelerate at INFO level and the resumed run silently differed."""
    save_checkpoint(FakeAccelerator(), str(tmp_path), 4)
    save_checkpoint(FakeAccelerator(), str(tmp_path), 8)
    newest = tmp_path / "checkpoint-8"
    if damage == "optimizer":
        (newest / "optimizer.bin").write_bytes(os.urandom(64))
        expected = "optimizer.bin"
    elif damage == "random_states":
        (newest / "random_states_0.pkl").write_bytes(os.urandom(64))
        expected = "random_states_0.pkl"
    else:
        (newest / "unet").mkdir()
        weights = newest / "unet" / "diffusion_pytorch_model.safetensors"
        from safetensors.torch import save_file

        save_file({"w": torch.ones(100)}, str(weights))
        weights.write_bytes(weights.read_bytes()[:-40])  # truncated, as by a full disk or a kill
        expected = "truncated"
    assert resolve_resume_checkpoint("latest", str(tmp_path)) == str(tmp_path / "checkpoint-4")
    with pytest.raises(ValueError, match=expected) as error:
        resolve_resume_checkpoint("checkpoint-8", str(tmp_path))
    assert "--resume_from_checkpoint" in str(error.value)


def test_a_failed_save_names_the_disk_and_keeps_the_previous_checkpoint(tmp_path):
    """Issue 17: a full disk gave only torch's "basic_ios::clear"."""
    save_checkpoint(FakeAccelerator(), str(tmp_path), 4)

    class FullDisk(FakeAccelerator):
        def save_state(self, output_dir):
            raise RuntimeError(
                "[enforce fail at inline_container.cc:626] . unexpected pos ... basic_ios::clear"
            )

    with pytest.raises(OSError, match=r"checkpoint-8 .*GiB are free.*--resume_from_checkpoint latest"):
        save_checkpoint(FullDisk(), str(tmp_path), 8, total_limit=1)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-4"]  # no half-written folder, nothing pruned
