"""Train one benchmark model through the package's training script ``training/train_smd.py``.

Used when the config says ``trainer: train_smd`` (the GPU config does): the script brings accelerate
(multi-GPU with ``train_smd_launcher: [accelerate, launch]``), mixed precision and atomic mid-training
checkpoints, so an interrupted training resumes from its last checkpoint (``--resume_from_checkpoint
latest``) when the benchmark is rerun. The config's settings map one to one onto the script's flags
(:func:`train_smd_arguments`); the finished SMDPipeline folder's ``unet/`` and ``scheduler/`` are then
published as the unit's model folder, exactly like the driver-local loop's output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .store import publish_folder_atomic

__all__ = ["TRAIN_SMD_SCRIPT", "train_smd_arguments", "train_unit_with_script"]

#: The package's training script (diffusers' train_unconditional.py flags plus SMD / E-TSDM flags).
TRAIN_SMD_SCRIPT = Path(__file__).resolve().parents[2] / "training" / "train_smd.py"
_NEVER = str(10**9)  # epochs between the script's sample grids / pipeline saves: only at the end


def _unet_config(config: dict) -> dict:
    data = config["data"]
    return {
        "_class_name": "UNet2DModel",
        "sample_size": data["resolution"],
        "in_channels": data["channels"],
        "out_channels": data["channels"],
        **config["unet"],
    }


def train_smd_arguments(
    config: dict, model_name: str, seed: int, output_dir: Path, unet_config_dir: Path
) -> list[str]:
    """The ``train_smd.py`` flags that train ``model_name`` with ``seed`` as the config says."""
    spec, data, training = config["models"][model_name], config["data"], config["training"]
    schedule = config["noise_schedule"]
    arguments = ["--output_dir", str(output_dir), "--seed", str(seed)]
    if data["dataset"] == "imagefolder":
        arguments += ["--train_data_dir", str(data["data_dir"])]
    else:
        arguments += ["--dataset_name", data["dataset"]]
        if data["dataset"] != "digits" and data.get("image_column"):
            arguments += ["--image_column", data["image_column"]]
    arguments += ["--resolution", str(data["resolution"]), "--num_channels", str(data["channels"])]
    arguments += ["--model_config_name_or_path", str(unet_config_dir)]
    arguments += ["--objective", config["smd_objective"] if spec["smd"] else "vanilla"]
    if spec["smd"]:
        arguments += ["--smd_latent_dim", str(config["smd"]["latent_dim"])]
        arguments += ["--smd_hypernet_layers", str(config["smd"].get("num_hypernet_layers", 2))]
    if spec["etsdm"]:
        arguments += ["--etsdm", "--etsdm_threshold", str(config["etsdm"]["threshold"])]
        arguments += ["--etsdm_intervals", str(config["etsdm"]["intervals"])]
    arguments += ["--ddpm_num_steps", str(schedule["num_train_timesteps"])]
    arguments += ["--ddpm_beta_schedule", schedule.get("beta_schedule", "linear")]
    # the script's own end-of-training sample grid: keep it cheap (and within T)
    arguments += ["--ddpm_num_inference_steps", str(min(20, schedule["num_train_timesteps"]))]
    arguments += ["--prediction_type", schedule["prediction_type"]]
    arguments += [
        "--train_batch_size",
        str(training["batch_size"]),
        "--max_train_steps",
        str(training["steps"]),
    ]
    arguments += ["--learning_rate", str(training["learning_rate"])]
    arguments += ["--lr_scheduler", training.get("lr_scheduler", "constant")]
    arguments += ["--lr_warmup_steps", str(training.get("lr_warmup_steps", 0))]
    arguments += ["--use_ema", "--ema_max_decay", str(training.get("ema_max_decay", 0.9999))]
    arguments += ["--ema_power", str(training.get("ema_power", 0.75))]
    arguments += ["--max_grad_norm", str(training.get("grad_clip", 1.0))]
    arguments += ["--adam_weight_decay", str(training.get("weight_decay", 0.0))]
    checkpointing = training.get("checkpointing_steps", max(1, training["steps"] // 10))
    arguments += ["--checkpointing_steps", str(checkpointing)]
    arguments += ["--checkpoints_total_limit", "2", "--resume_from_checkpoint", "latest"]
    arguments += ["--save_images_epochs", _NEVER, "--save_model_epochs", _NEVER]
    return arguments


def train_unit_with_script(config: dict, model_name: str, seed: int, folder: Path, work_dir: Path) -> dict:
    """Run ``train_smd.py`` (resuming its latest checkpoint) and publish ``folder`` atomically."""
    if not TRAIN_SMD_SCRIPT.is_file():
        raise FileNotFoundError(f"trainer `train_smd` needs {TRAIN_SMD_SCRIPT}")
    spec = config["models"][model_name]
    script_dir = work_dir / "train_smd" / f"{model_name}-seed{seed}"
    unet_config_dir = work_dir / "train_smd" / "unet_config"
    unet_config_dir.mkdir(parents=True, exist_ok=True)
    (unet_config_dir / "config.json").write_text(json.dumps(_unet_config(config), indent=1) + "\n")
    launcher = list(config.get("train_smd_launcher") or [sys.executable])
    command = (
        launcher
        + [str(TRAIN_SMD_SCRIPT)]
        + train_smd_arguments(config, model_name, seed, script_dir, unet_config_dir)
    )
    # the checkout's package first, so the script trains with the code this driver runs
    repository = str(TRAIN_SMD_SCRIPT.parents[1])
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repository, os.environ.get("PYTHONPATH")]))
    )
    subprocess.run(command, check=True, env=env)
    script_summary = json.loads((script_dir / "run_summary.json").read_text())
    summary = {
        "model": model_name,
        "seed": seed,
        "model_class": script_summary["model_class"],
        "objective": script_summary["objective"],
        "etsdm": spec["etsdm"],
        "etsdm_threshold": config["etsdm"]["threshold"] if spec["etsdm"] else None,
        "etsdm_intervals": config["etsdm"]["intervals"] if spec["etsdm"] else None,
        "global_step": script_summary["global_step"],
        "batch_size": script_summary.get("total_batch_size"),
        "parameters": script_summary["parameter_counts"]["total"],
        "final_loss": script_summary["final_loss"],
        "wall_clock_seconds": script_summary["wall_clock_seconds"],
        "ema": bool(script_summary.get("use_ema")),
        "trainer": "train_smd",
    }

    def build(tmp: Path) -> None:
        shutil.copytree(script_dir / "unet", tmp / "unet")
        shutil.copytree(script_dir / "scheduler", tmp / "scheduler")
        (tmp / "run_summary.json").write_text(json.dumps(summary, indent=1) + "\n")

    publish_folder_atomic(build, folder)
    return summary
