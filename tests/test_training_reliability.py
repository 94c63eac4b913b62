"""Reliability of the training script: kill and resume, non-finite loss, bad input before any step."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from pipeline_testing import tiny_unet
from training_helpers import max_weight_difference, parse_flags, tiny_flags, train_with_flags

from diffusers_smd.training import NonFiniteLossError
from diffusers_smd.training.checkpoints import list_checkpoints, resolve_resume_checkpoint

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training", "train_smd.py")


def resumable_flags(output_dir):
    return tiny_flags(
        output_dir,
        "--objective", "smd",
        "--etsdm", "--etsdm_threshold", "10", "--etsdm_intervals", "2",
        "--max_train_steps", "12",
        "--checkpointing_steps", "1",
        "--checkpoints_total_limit", "3",
        "--use_ema",
        "--random_flip",
    )  # fmt: skip


def test_run_killed_with_sigkill_and_resumed_matches_an_uninterrupted_run(tmp_path, subprocess_env):
    train_with_flags(resumable_flags(tmp_path / "uninterrupted"))

    killed = tmp_path / "killed"
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, SCRIPT, *resumable_flags(killed)], env=subprocess_env, stdout=log, stderr=log
        )
        deadline = time.time() + 300
        while not (killed / "checkpoint-3").is_dir() and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    assert not (killed / "model_index.json").exists()  # it really stopped mid-way
    stopped_at = max(int(os.path.basename(p).split("-")[1]) for p in list_checkpoints(str(killed)))
    assert 3 <= stopped_at < 12
    # A half-written checkpoint from the moment of the kill must be ignored by `latest`.
    os.makedirs(killed / ".tmp-checkpoint-99")
    (killed / ".tmp-checkpoint-99" / "optimizer.bin").write_text("truncated")

    resumed = subprocess.run(
        [sys.executable, SCRIPT, *resumable_flags(killed), "--resume_from_checkpoint", "latest"],
        env=subprocess_env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"checkpoint-{stopped_at}" in resumed.stdout + resumed.stderr
    summary = json.loads((killed / "run_summary.json").read_text())
    assert summary["global_step"] == 12 and summary["resumed_from"] == f"checkpoint-{stopped_at}"

    reference = tmp_path / "uninterrupted"
    assert max_weight_difference(reference / "unet", killed / "unet") <= 1e-6  # final pipeline (EMA weights)
    assert (
        max_weight_difference(reference / "checkpoint-12" / "unet", killed / "checkpoint-12" / "unet") <= 1e-6
    )
    assert (
        max_weight_difference(reference / "checkpoint-12" / "unet_ema", killed / "checkpoint-12" / "unet_ema")
        <= 1e-6
    )
    optimizer_a = torch.load(reference / "checkpoint-12" / "optimizer.bin", weights_only=True)
    optimizer_b = torch.load(killed / "checkpoint-12" / "optimizer.bin", weights_only=True)
    assert optimizer_a["state"][0]["step"] == optimizer_b["state"][0]["step"] == 12


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    flags = tiny_flags(
        out, "--objective", "smd", "--max_train_steps", "8", "--checkpointing_steps", "1",
        "--learning_rate", "1e30", "--max_grad_norm", "1e30",
    )  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=r"at step \d+") as error:
        train_with_flags(flags)
    message = str(error.value)
    step = int(message.split("at step ")[1].split(" ")[0])
    kept = list_checkpoints(str(out))
    assert kept, "a good checkpoint should have been kept"
    assert os.path.basename(kept[-1]) == f"checkpoint-{step - 1}"
    assert os.path.basename(kept[-1]) in message and "--learning_rate" in message
    assert resolve_resume_checkpoint("latest", str(out)) == kept[-1]
    assert not (out / "model_index.json").exists()  # no model saved from the broken state


def bad_case(name, tmp_path):
    """(extra flags, the flag the message must name) for each kind of bad input."""
    if name == "pretrained_conditional_unet":
        folder = tmp_path / "cond"
        folder.mkdir()
        (folder / "config.json").write_text(
            json.dumps({"_class_name": "UNet2DConditionModel", "in_channels": 4})
        )
        return ["--pretrained_model_name_or_path", str(folder)], "incompatible"
    if name == "pretrained_class_conditional":
        tiny_unet(num_class_embeds=10).save_pretrained(tmp_path / "classes")
        return ["--pretrained_model_name_or_path", str(tmp_path / "classes")], "class-conditional"
    if name == "pretrained_channels":
        tiny_unet().save_pretrained(tmp_path / "grey")
        return [
            "--pretrained_model_name_or_path",
            str(tmp_path / "grey"),
            "--num_channels",
            "3",
        ], "--num_channels"
    if name == "pretrained_resolution":
        tiny_unet().save_pretrained(tmp_path / "eight")
        return [
            "--pretrained_model_name_or_path",
            str(tmp_path / "eight"),
            "--resolution",
            "16",
        ], "--resolution"
    if name == "vanilla_on_smd":
        from diffusers_smd import SMDUNet2DModel

        SMDUNet2DModel.from_unet(tiny_unet(), latent_dim=2).save_pretrained(tmp_path / "smd")
        return [
            "--pretrained_model_name_or_path",
            str(tmp_path / "smd"),
            "--objective",
            "vanilla",
        ], "--objective"
    return {
        "dataset_path": (["--dataset_name", str(tmp_path / "no_such_dataset")], "--dataset_name"),
        "resolution_not_divisible": (
            ["--resolution", "10", "--block_out_channels", "8,16,16"],
            "--resolution",
        ),
        "resume_nowhere": (
            ["--resume_from_checkpoint", str(tmp_path / "checkpoint-5")],
            "--resume_from_checkpoint",
        ),
        "resume_name_nowhere": (["--resume_from_checkpoint", "checkpoint-5"], "--resume_from_checkpoint"),
        "pretrained_nowhere": (
            ["--pretrained_model_name_or_path", str(tmp_path / "nothing")],
            "--pretrained_model_name_or_path",
        ),
        "etsdm_intervals": (["--etsdm", "--etsdm_intervals", "9"], "--etsdm_intervals"),
        # tiny_flags train with 50 timesteps: a 60-step DDPM grid does not exist
        "inference_steps_above_training": (
            ["--ddpm_num_inference_steps", "60"],
            "--ddpm_num_inference_steps",
        ),
    }[name]


@pytest.mark.parametrize(
    "name",
    [
        "dataset_path",
        "resolution_not_divisible",
        "resume_nowhere",
        "resume_name_nowhere",
        "pretrained_nowhere",
        "pretrained_conditional_unet",
        "pretrained_class_conditional",
        "pretrained_channels",
        "pretrained_resolution",
        "vanilla_on_smd",
        "etsdm_intervals",
        "inference_steps_above_training",
    ],
)
def test_bad_input_fails_before_any_training_step_naming_the_flag(tmp_path, name):
    extra, expected = bad_case(name, tmp_path)
    out = tmp_path / "out"
    flags = tiny_flags(out, "--max_train_steps", "2", "--checkpointing_steps", "1", *extra)
    if "--resolution" in extra[:1] or "--pretrained_model_name_or_path" in extra:
        index = flags.index("--resolution")
        if "--resolution" not in extra:
            del flags[index : index + 2]
    with pytest.raises(ValueError, match=expected):
        train_with_flags(flags)
    assert not (out / "logs").exists() and list_checkpoints(str(out)) == []
    assert not (out / "model_index.json").exists()


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--train_data_dir", "/no/such/folder"], "--train_data_dir"),
        (["--etsdm_threshold", "10"], "--etsdm"),
        (["--objective", "smd-mixture", "--snr_gamma", "5"], "--snr_gamma"),
        (["--learning_rate", "0"], "--learning_rate"),
        (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit"),
        (["--dataset_name", "digits", "--train_data_dir", "."], "--dataset_name"),
    ],
)
def test_bad_flag_values_fail_while_parsing(tmp_path, extra, flag):
    with pytest.raises(ValueError, match=flag):
        parse_flags(tiny_flags(tmp_path / "out", *extra))


@pytest.mark.parametrize("hub_flags", [[], ["--hub_model_id", "no-namespace"], ["--hub_model_id", "a/b/c"]])
def test_push_to_hub_with_a_bad_repo_id_fails_before_training(tmp_path, hub_flags):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="--hub_model_id"):
        train_with_flags(tiny_flags(out, "--max_train_steps", "1", "--push_to_hub", *hub_flags))
    assert not out.exists()


def test_a_finished_model_is_never_trained_over_without_asking(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model_index.json").write_text("{}")
    with pytest.raises(ValueError, match="--output_dir"):
        train_with_flags(tiny_flags(out, "--max_train_steps", "1"))
    assert (out / "model_index.json").read_text() == "{}"


def test_sample_grids_default_to_every_training_timestep(tmp_path):
    """Without --ddpm_num_inference_steps the grids use the model's own T (here 4, not diffusers' 1000)."""
    out = tmp_path / "out"
    flags = tiny_flags(out, "--max_train_steps", "1", "--ddpm_num_steps", "4")
    index = flags.index("--ddpm_num_inference_steps")
    del flags[index : index + 2]
    train_with_flags(flags)
    saved = json.loads((out / "run_summary.json").read_text())["config"]
    assert saved["ddpm_num_steps"] == 4 and saved["ddpm_num_inference_steps"] == 4
    assert (out / "sample_grid.png").is_file()
