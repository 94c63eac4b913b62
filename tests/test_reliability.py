"""Nothing silently wrong (issue 17): resumes that refuse changed runs, checks before any work, one-line errors.

Each test names the case of the issue it guards; each failed (or passed silently) on the code before the fix.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from diffusers import DDPMScheduler
from pipeline_testing import tiny_unet
from training_helpers import max_weight_difference, parse_flags, tiny_flags, train_with_flags

from diffusers_smd import SMDPipeline, cli
from diffusers_smd.training.checkpoints import list_checkpoints


def run_flags(out, steps, *extra):
    return tiny_flags(out, "--max_train_steps", str(steps), "--checkpointing_steps", "2", "--use_ema", *extra)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 4-step E-TSDM run (checkpoints at 2 and 4), as `diffusers-smd train ... --etsdm` leaves it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train_with_flags(run_flags(out, 4, "--etsdm", "--etsdm_intervals", "2"))
    return out


def test_case_5_resuming_after_a_kill_during_the_final_save_trains_no_extra_step(tmp_path, finished_run):
    # A kill -9 during the final save_pretrained leaves the last checkpoint but no complete pipeline.
    killed = tmp_path / "killed"
    os.makedirs(killed)
    os.system(f"cp -r {finished_run}/checkpoint-4 {killed}/")
    summary = train_with_flags(
        run_flags(killed, 4, "--etsdm", "--etsdm_intervals", "2", "--resume_from_checkpoint", "latest")
    )
    assert summary["global_step"] == 4 and summary["resumed_from"] == "checkpoint-4"
    assert max_weight_difference(finished_run / "unet", killed / "unet") == 0.0


def test_case_6_a_finished_run_resumed_with_fewer_steps_is_refused_and_kept(finished_run):
    before = (finished_run / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    flags = run_flags(
        finished_run, 2, "--etsdm", "--etsdm_intervals", "2", "--resume_from_checkpoint", "latest"
    )
    with pytest.raises(ValueError, match=r"--max_train_steps 2 is below the step of checkpoint-4 \(4\)"):
        train_with_flags(flags)
    assert (finished_run / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == before
    assert [os.path.basename(p) for p in list_checkpoints(str(finished_run))] == [
        "checkpoint-2",
        "checkpoint-4",
    ]


@pytest.mark.parametrize(
    "changed, message",
    [
        (["--resolution", "16"], "--resolution: 8 in the checkpoint, 16 now"),  # case 7
        (
            ["--prediction_type", "v_prediction"],
            "--prediction_type: 'epsilon' in the checkpoint, 'v_prediction' now",
        ),
        ([], "--etsdm: True in the checkpoint, False now"),  # case 9: resumed without --etsdm
    ],
)
def test_cases_7_8_9_a_resume_with_other_model_settings_is_refused_naming_both_values(
    finished_run, changed, message
):
    etsdm = ["--etsdm", "--etsdm_intervals", "2"] if changed else []
    flags = run_flags(finished_run, 6, *etsdm, "--resume_from_checkpoint", "latest")
    for flag, value in zip(changed[::2], changed[1::2]):
        if flag in flags:
            flags[flags.index(flag) + 1] = value
        else:
            flags += [flag, value]
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        train_with_flags(flags)
    assert "may change on resume" in str(error.value) and "--learning_rate" in str(error.value)
    assert [os.path.basename(p) for p in list_checkpoints(str(finished_run))] == [
        "checkpoint-2",
        "checkpoint-4",
    ]


def test_a_safe_setting_may_change_on_resume_and_takes_effect(tmp_path, finished_run):
    """A larger --max_train_steps and a new --learning_rate are allowed; the new rate is applied, not ignored."""
    out = tmp_path / "more"
    os.makedirs(out)
    os.system(f"cp -r {finished_run}/checkpoint-4 {out}/")
    flags = run_flags(out, 6, "--etsdm", "--etsdm_intervals", "2", "--resume_from_checkpoint", "latest")
    flags[flags.index("--learning_rate") + 1] = "5e-4"
    summary = train_with_flags(flags)
    assert summary["global_step"] == 6 and summary["config"]["learning_rate"] == 5e-4
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(out / "logs" / "more"))  # logs/<run name>/, as accelerate writes them
    accumulator.Reload()
    # constant schedule: the rate logged after the resume is the new one, not the checkpoint's 1e-3
    assert [round(event.value, 9) for event in accumulator.Scalars("lr")] == [5e-4, 5e-4]


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--learning_rate", "nan"], "--learning_rate must be a finite number"),
        (["--resolution", "100000"], "--resolution 100000: one batch"),
        (["--logger", "wandb"], "--logger wandb needs the wandb package"),
    ],
)
def test_bad_values_fail_before_any_work_with_a_clear_message(tmp_path, extra, flag):
    from accelerate.utils import is_wandb_available

    assert not is_wandb_available(), "this test expects wandb not to be installed, as in CI"
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=flag):
        train_with_flags(tiny_flags(out, "--max_train_steps", "1", *extra))
    assert not (out / "logs").exists()


def test_an_output_dir_that_is_a_file_is_named(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("mine")
    with pytest.raises(ValueError, match="--output_dir .* is a file"):
        parse_flags(tiny_flags(target))
    assert target.read_text() == "mine"


def test_push_to_hub_offline_fails_before_training(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="--push_to_hub needs the network"):
        train_with_flags(
            tiny_flags(out, "--max_train_steps", "1", "--push_to_hub", "--hub_model_id", "me/model")
        )
    assert not out.exists()


def test_an_unreadable_image_in_train_data_dir_is_named_before_the_first_step(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(6):
        Image.new("L", (8, 8), color=index * 40).save(folder / f"{index}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(40))
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"--train_data_dir .*1 of 7 images cannot be read \(broken.png\)"):
        train_with_flags(tiny_flags(out, "--train_data_dir", str(folder), "--max_train_steps", "1"))
    assert list_checkpoints(str(out)) == [] and not (out / "model_index.json").exists()


def test_pipeline_accepts_numpy_integers_and_names_a_callback_that_returns_nothing():
    pipeline = SMDPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=10))
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(batch_size=np.int64(2), num_inference_steps=np.int64(2), output_type="np").images
    assert images.shape == (2, 8, 8, 1)
    with pytest.raises(TypeError, match="callback_on_step_end` must return a dict"):
        pipeline(batch_size=1, num_inference_steps=2, callback_on_step_end=lambda *args: None)


def test_a_corrupt_model_index_is_named(tmp_path, capsys):
    SMDPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=10)).save_pretrained(
        tmp_path / "m"
    )
    (tmp_path / "m" / "model_index.json").write_text("{ broken")
    assert cli.main(["sample", str(tmp_path / "m"), "--output", str(tmp_path / "x.png")]) == 2
    error = capsys.readouterr().err
    assert "model_index.json is not valid JSON" in error and error.count("\n") == 1


def test_train_errors_arrive_as_one_line_from_the_parent_and_from_a_training_process(
    tmp_path, subprocess_env
):
    flags = tiny_flags(tmp_path / "a", "--max_train_steps", "1", "--etsdm", "--etsdm_intervals", "9")
    result = subprocess.run([sys.executable, "-m", "diffusers_smd.cli", "train", "--cpu", *flags],
                            env=subprocess_env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "error" in line] == [result.stderr.strip()]
    assert "etsdm_intervals" in result.stderr
    # a data set that only the training process discovers is missing
    flags = tiny_flags(
        tmp_path / "b", "--max_train_steps", "1", "--dataset_name", str(tmp_path / "no-such-data")
    )
    result = subprocess.run([sys.executable, "-m", "diffusers_smd.cli", "train", "--cpu", *flags],
                            env=subprocess_env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "CalledProcessError" not in result.stderr
    assert "error: --dataset_name" in result.stderr
