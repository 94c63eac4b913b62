"""Text-to-image fine-tuning keeps every guarantee of the training engine: kill and resume, LoRA checkpoints,
non-finite loss, a resume with other settings, two DDP processes, bad input before the first step."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from diffusers_smd import cli
from diffusers_smd.training import (
    NonFiniteLossError,
    TextToImageTask,
    TextToImageTrainingConfig,
    Trainer,
    parse_config,
    train,
)
from diffusers_smd.training.checkpoints import list_checkpoints
from tests.pipeline_testing import (
    captioned_dataset,
    save_captioned_image_folder,
    save_tiny_text_to_image_pipeline,
    text_to_image_flags,
    tiny_unet,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO_ROOT, "training", "train_text_to_image_smd.py")


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return save_tiny_text_to_image_pipeline(tmp_path_factory.mktemp("pretrained") / "sd")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return save_captioned_image_folder(tmp_path_factory.mktemp("captioned") / "images")


def flags(pretrained, output_dir, images, *extra):
    return text_to_image_flags(pretrained, output_dir, "--train_data_dir", str(images), *extra)


def run(argv, train_dataset=None):
    config = parse_config(TextToImageTrainingConfig, [str(a) for a in argv])
    return train(config, TextToImageTask(config, train_dataset=train_dataset)).to_dict()


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def weights(folder):
    (name,) = [n for n in os.listdir(folder) if n.endswith(".safetensors")]
    return load_file(os.path.join(folder, name))


def resumable(pretrained, output_dir, images):
    return flags(
        pretrained, output_dir, images,
        "--objective", "smd", "--etsdm", "--use_ema", "--random_flip", "--proportion_empty_prompts", "0.5",
        "--max_train_steps", "10", "--checkpointing_steps", "1", "--checkpoints_total_limit", "3",
    )  # fmt: skip


def test_killed_with_sigkill_and_resumed_equals_an_uninterrupted_run(sd, images, tmp_path, subprocess_env):
    run(resumable(sd, tmp_path / "uninterrupted", images))

    killed = tmp_path / "killed"
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, SCRIPT, *resumable(sd, killed, images)],
            env=subprocess_env,
            stdout=log,
            stderr=log,
        )
        deadline = time.time() + 300
        while not (killed / "checkpoint-3").is_dir() and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    assert not (killed / "model_index.json").exists()
    stopped_at = max(int(os.path.basename(p).split("-")[1]) for p in list_checkpoints(str(killed)))
    assert 3 <= stopped_at < 10

    resumed = subprocess.run(
        [sys.executable, SCRIPT, *resumable(sd, killed, images), "--resume_from_checkpoint", "latest"],
        env=subprocess_env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((killed / "run_summary.json").read_text())
    assert summary["global_step"] == 10 and summary["resumed_from"] == f"checkpoint-{stopped_at}"
    reference = tmp_path / "uninterrupted"
    for folder in ("unet", "checkpoint-10/unet", "checkpoint-10/unet_ema"):
        assert same_tensors(weights(reference / folder), weights(killed / folder)), folder


def test_a_lora_smd_run_stopped_and_resumed_equals_an_uninterrupted_run(tmp_path):
    """The LoRA checkpoints (standard LoRA weights + SMD modules) restore the run exactly (SDXL, datasets.Dataset)."""
    sdxl = save_tiny_text_to_image_pipeline(tmp_path / "sdxl", sdxl=True)
    dataset = captioned_dataset()

    def lora_flags(out, steps):
        return text_to_image_flags(
            sdxl, out, "--objective", "smd", "--lora", "--rank", "2", "--random_flip", "--checkpointing_steps", "2",
            "--max_train_steps", str(steps),
        )  # fmt: skip

    run(lora_flags(tmp_path / "whole", 6), dataset)
    run(lora_flags(tmp_path / "parts", 4), dataset)
    run([*lora_flags(tmp_path / "parts", 6), "--resume_from_checkpoint", "latest"], dataset)
    for name in ("pytorch_lora_weights.safetensors", "smd_modules/smd_modules.safetensors"):
        whole, parts = load_file(tmp_path / "whole" / name), load_file(tmp_path / "parts" / name)
        assert same_tensors(whole, parts), name
    first = load_file(tmp_path / "whole" / "checkpoint-2" / "unet_lora" / "pytorch_lora_weights.safetensors")
    assert not same_tensors(first, load_file(tmp_path / "whole" / "pytorch_lora_weights.safetensors"))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(sd, images, tmp_path):
    out = tmp_path / "run"
    argv = flags(sd, out, images, "--max_train_steps", "6", "--checkpointing_steps", "1",
                 "--learning_rate", "1e30", "--max_grad_norm", "1e30")  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=r"at step \d+") as error:
        run(argv)
    step = int(str(error.value).split("at step ")[1].split(" ")[0])
    kept = list_checkpoints(str(out))
    assert (
        kept
        and os.path.basename(kept[-1]) == f"checkpoint-{step - 1}"
        and os.path.basename(kept[-1]) in str(error.value)
    )
    assert not (out / "model_index.json").exists()


@pytest.mark.parametrize(
    ("change", "flag"),
    [(["--objective", "vanilla"], "--objective"), (["--lora"], "--lora"), (["--etsdm"], "--etsdm")],
)
def test_a_resume_with_other_model_settings_is_refused(sd, images, tmp_path, change, flag):
    out = tmp_path / "run"
    run(flags(sd, out, images, "--objective", "smd", "--max_train_steps", "1", "--checkpointing_steps", "1"))
    argv = flags(
        sd, out, images, "--objective", "smd", "--max_train_steps", "2", "--resume_from_checkpoint", "latest"
    )
    with pytest.raises(ValueError, match=flag):
        run([*argv, *change])


def test_gradient_checkpointing_gives_the_same_weights_and_scale_lr_scales(sd, images, tmp_path):
    for lora in (False, True):  # LoRA: the adapters still get their gradients through the recomputed blocks
        extra = ["--objective", "smd", *["--lora"] * lora]
        plain = run(flags(sd, tmp_path / f"plain{lora}", images, *extra))
        recomputed = run(
            flags(sd, tmp_path / f"recomputed{lora}", images, *extra, "--gradient_checkpointing")
        )
        assert plain["final_loss"] == pytest.approx(recomputed["final_loss"], rel=1e-6)
        saved = "pytorch_lora_weights.safetensors" if lora else "unet/diffusion_pytorch_model.safetensors"
        a, b = load_file(tmp_path / f"plain{lora}" / saved), load_file(tmp_path / f"recomputed{lora}" / saved)
        assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
        if lora:
            assert max(a[k].abs().max().item() for k in a if ".lora.up." in k) > 0  # trained (B starts at 0)

    scaled = [
        "--scale_lr",
        "--gradient_accumulation_steps",
        "3",
        "--learning_rate",
        "1e-5",
        "--gradient_checkpointing",
    ]
    config = parse_config(TextToImageTrainingConfig, flags(sd, tmp_path / "scaled", images, *scaled))
    trainer = Trainer(config, TextToImageTask(config))
    # learning rate x accumulation x batch x processes
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5 * 3 * 2 * 1)
    checkpointed = [
        name for name, m in trainer.unwrapped.named_modules() if getattr(m, "gradient_checkpointing", 0)
    ]
    assert "unet.down_blocks.0" in checkpointed  # the flag reaches the wrapped UNet's blocks


def test_two_cpu_processes_fine_tune_with_lora_and_smd(sd, images, tmp_path, subprocess_env):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "diffusers_smd.cli", "train-text-to-image", "--cpu", "--num_processes", "2",
        *flags(sd, out, images, "--objective", "smd", "--lora", "--etsdm", "--checkpointing_steps", "2"),
    ]  # fmt: skip
    result = subprocess.run(command, env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["total_batch_size"] == 4 and summary["global_step"] == 2
    assert {"random_states_0.pkl", "random_states_1.pkl", "unet_lora"} <= set(
        os.listdir(out / "checkpoint-2")
    )
    assert {"pytorch_lora_weights.safetensors", "smd_modules", "scheduler"} <= set(os.listdir(out))


def test_the_command_checks_settings_before_launching_and_launches_the_text_to_image_module(
    sd, images, tmp_path, capsys
):
    argv = [
        "train-text-to-image",
        "--cpu",
        "--num_processes",
        "2",
        "--dry_run",
        *flags(sd, tmp_path / "o", images),
    ]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out.split()
    assert printed[printed.index("-m", 3) + 1] == "diffusers_smd.training.train_text_to_image"
    bad = ["train-text-to-image", *flags(sd, tmp_path / "o", images, "--resolution", "6")]
    assert cli.main(bad) == 2
    assert "--resolution" in capsys.readouterr().err and not (tmp_path / "o").exists()


# ---- bad input, each refused before the first step, naming the flag -----------------------------------
def _copy_with(sd, tmp_path, edit):
    """A copy of the pretrained folder with one config file changed by ``edit(name -> dict)``."""
    folder = tmp_path / "edited"
    shutil.copytree(sd, folder)
    for name, change in edit.items():
        path = folder / name
        config = json.loads(path.read_text())
        config.update(change)
        path.write_text(json.dumps(config))
    return folder


def bad_case(name, sd, images, tmp_path):
    """(flags, train_dataset, the text the error must contain) for each kind of bad input."""
    out = tmp_path / "out"
    if name == "pixel_space_pipeline":
        from diffusers import DDPMScheduler

        from diffusers_smd import SMDPipeline

        SMDPipeline(unet=tiny_unet(), scheduler=DDPMScheduler()).save_pretrained(tmp_path / "pixel")
        return flags(tmp_path / "pixel", out, images), None, "pixel-space"
    if name == "single_unet":
        tiny_unet().save_pretrained(tmp_path / "unet")
        return flags(tmp_path / "unet", out, images), None, "single UNet2DModel"
    if name == "inpainting_unet":
        folder = _copy_with(sd, tmp_path, {"unet/config.json": {"in_channels": 9}})
        return flags(folder, out, images), None, "9 input channels"
    if name == "sdxl_refiner":
        folder = _copy_with(
            sd,
            tmp_path,
            {
                "model_index.json": {
                    "text_encoder": [None, None],
                    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                }
            },
        )
        return flags(folder, out, images), None, "refiner"
    if name == "missing_caption_column":
        return (
            flags(sd, out, images, "--caption_column", "prompt"),
            None,
            "--caption_column 'prompt' is not a column",
        )
    if name == "captions_that_are_not_text":
        import datasets

        data = captioned_dataset().remove_columns("text").add_column("text", [3] * 6)
        assert isinstance(data, datasets.Dataset)
        return text_to_image_flags(sd, out), data, "--caption_column 'text': row 0 holds 3"
    if name == "missing_image_column":
        return flags(sd, out, images, "--image_column", "picture"), None, "--image_column 'picture'"
    if name == "resolution_the_vae_cannot_handle":
        return flags(sd, out, images, "--resolution", "6"), None, "--resolution 6"
    if name == "no_data":
        return text_to_image_flags(sd, out), None, "--dataset_name"
    if name == "two_data_sources":
        return flags(sd, out, images), captioned_dataset(), "not both"
    if name == "vanilla_on_an_smd_model":
        run(flags(sd, tmp_path / "smd", images, "--objective", "smd", "--max_train_steps", "0"))
        return flags(tmp_path / "smd", out, images, "--objective", "vanilla"), None, "--objective vanilla"
    if name == "etsdm_intervals":
        return (
            flags(sd, out, images, "--etsdm", "--etsdm_threshold", "3", "--etsdm_intervals", "5"),
            None,
            "--etsdm",
        )
    if name == "other_etsdm_than_the_model":
        run(flags(sd, tmp_path / "etsdm", images, "--etsdm", "--max_train_steps", "0"))
        return (
            flags(tmp_path / "etsdm", out, images),
            None,
            "--etsdm --etsdm_threshold 100 --etsdm_intervals 5",
        )
    raise AssertionError(name)


BAD_CASES = [
    "pixel_space_pipeline", "single_unet", "inpainting_unet", "sdxl_refiner", "missing_caption_column",
    "captions_that_are_not_text", "missing_image_column", "resolution_the_vae_cannot_handle", "no_data",
    "two_data_sources", "vanilla_on_an_smd_model", "etsdm_intervals", "other_etsdm_than_the_model",
]  # fmt: skip


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_input_fails_before_the_first_step_naming_the_flag(sd, images, tmp_path, name, monkeypatch):
    argv, dataset, message = bad_case(name, sd, images, tmp_path)
    steps = []
    monkeypatch.setattr(Trainer, "step", lambda self, batch: steps.append(batch))
    with pytest.raises(ValueError) as error:
        run(argv, dataset)
    assert message in str(error.value)
    assert steps == [] and not list_checkpoints(str(tmp_path / "out"))


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--proportion_empty_prompts", "1.5"], "--proportion_empty_prompts"),
        (["--rank", "8"], "--rank"),
        (["--lora", "--use_ema"], "--use_ema"),
        (["--lora", "--push_to_hub", "--hub_model_id", "me/x"], "--push_to_hub"),
        (["--prediction_type", "velocity"], "--prediction_type"),
    ],
)
def test_bad_flag_values_fail_while_parsing(tmp_path, extra, flag, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    argv = [
        "--pretrained_model_name_or_path",
        "x/y",
        "--dataset_name",
        "a/b",
        "--output_dir",
        str(tmp_path),
        *extra,
    ]
    with pytest.raises((ValueError, SystemExit)) as error:
        parse_config(TextToImageTrainingConfig, argv)
    if error.type is ValueError:
        assert flag in str(error.value)


def test_pretrained_model_is_required():
    with pytest.raises(ValueError, match="--pretrained_model_name_or_path is required"):
        parse_config(TextToImageTrainingConfig, ["--dataset_name", "a/b"])
