"""Train one benchmark model with the package's training engine and publish its pipeline folder.

Every model is trained by :func:`diffusers_smd.training.train` (the loop of ``training/train_smd.py`` and
``diffusers-smd train``) from an :class:`~diffusers_smd.training.UnconditionalTrainingConfig`: the config
file's ``training`` section holds field names of that configuration (checked when it is built), the rest
(data, UNet, SMD sizes, E-TSDM, noise schedule) comes from the other sections. Training resumes from its
last checkpoint when a run is interrupted. With ``launcher`` (e.g. ``[accelerate, launch]``) it runs
``training/train_smd.py`` through that command instead (multi-GPU), with the same settings as flags.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from diffusers_smd.atomic import replace_folder
from diffusers_smd.pipelines import SMDPipeline
from diffusers_smd.training import UnconditionalTrainingConfig, config_to_argv, train

__all__ = ["TRAIN_SMD_SCRIPT", "load_trained", "train_unit", "training_config", "unet_config"]

TRAIN_SMD_SCRIPT = Path(__file__).resolve().parents[2] / "training" / "train_smd.py"
_NEVER = 10**9  # epochs between the engine's sample grids / pipeline saves: only at the end
_LEFT_BEHIND = ("checkpoint-*", "logs", "samples")  # what a published model folder does not need


def unet_config(config: dict, model_name: str) -> dict:
    """The UNet2DModel config of ``model_name``: the shared ``unet`` section with the model's own ``unet`` overrides."""
    data = config["data"]
    return {
        "_class_name": "UNet2DModel",
        "sample_size": data["resolution"],
        "in_channels": data["channels"],
        "out_channels": data["channels"],
        **config["unet"],
        **config["models"][model_name].get("unet", {}),
    }


def training_config(
    config: dict, model_name: str, seed: int, output_dir: Path, unet_config_dir: Path
) -> UnconditionalTrainingConfig:
    """The engine's configuration that trains ``model_name`` with ``seed`` as the benchmark config says."""
    spec, data, schedule = config["models"][model_name], config["data"], config["noise_schedule"]
    smd = config.get("smd") or {}
    num_train_timesteps = spec.get("num_train_timesteps", schedule["num_train_timesteps"])
    settings = dict(
        output_dir=str(output_dir),
        seed=seed,
        resolution=data["resolution"],
        num_channels=data["channels"],
        model_config_name_or_path=str(unet_config_dir),
        objective=spec["objective"],
        etsdm=spec["etsdm"],
        ddpm_num_steps=num_train_timesteps,
        ddpm_beta_schedule=schedule.get("beta_schedule", "linear"),
        prediction_type=schedule["prediction_type"],
        # the engine's own end-of-training grid: keep it cheap (and within T)
        ddpm_num_inference_steps=min(20, num_train_timesteps),
        resume_from_checkpoint="latest",
        save_images_epochs=_NEVER,
        save_model_epochs=_NEVER,
        max_train_samples=data.get("max_train_images"),
    )
    # the run's own training settings may keep more checkpoints (K(t) during training reads them)
    training_settings = {"checkpoints_total_limit": 2, **config["training"]}
    if data["dataset"] == "imagefolder":
        settings["train_data_dir"] = str(data["data_dir"])
    else:
        settings["dataset_name"] = data["dataset"]
        if data["dataset"] != "digits" and data.get("image_column"):
            settings["image_column"] = data["image_column"]
    if spec["objective"] != "vanilla":
        settings.update(
            smd_latent_dim=smd["latent_dim"], smd_hypernet_layers=smd.get("num_hypernet_layers", 2)
        )
        if smd.get("identifier_block_out_channels"):
            settings["smd_identifier_channels"] = tuple(smd["identifier_block_out_channels"])
    if spec["etsdm"]:
        settings.update(
            etsdm_threshold=config["etsdm"]["threshold"], etsdm_intervals=config["etsdm"]["intervals"]
        )
    try:
        training = UnconditionalTrainingConfig(**training_settings, **settings)
    except TypeError as error:  # a key of `training` that is not a training setting
        raise ValueError(f"training: {error}; use field names of UnconditionalTrainingConfig") from None
    training.validate()
    return training


def train_unit(config: dict, model_name: str, seed: int, folder: Path, work_dir: Path) -> dict:
    """Train ``model_name`` with ``seed`` (resuming its latest checkpoint) and publish ``folder`` atomically."""
    training_dir = work_dir / "training" / f"{model_name}-seed{seed}"
    unet_config_dir = work_dir / "training" / f"unet_config-{model_name}"
    unet_config_dir.mkdir(parents=True, exist_ok=True)
    (unet_config_dir / "config.json").write_text(json.dumps(unet_config(config, model_name), indent=1) + "\n")
    settings = training_config(config, model_name, seed, training_dir, unet_config_dir)
    launcher = config.get("launcher")
    if launcher:
        command = [*launcher, str(TRAIN_SMD_SCRIPT), *config_to_argv(settings)]
        # the checkout's package first, so the script trains with the code this driver runs
        repository = str(TRAIN_SMD_SCRIPT.parents[1])
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repository, os.environ.get("PYTHONPATH")]))
        )
        subprocess.run(command, check=True, env=env)
        summary = json.loads((training_dir / "run_summary.json").read_text())
    else:
        summary = train(settings).to_dict()
    replace_folder(
        lambda tmp: shutil.copytree(
            training_dir, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*_LEFT_BEHIND)
        ),
        folder,
    )
    return summary


def load_trained(folder: Path, device: str = "cpu") -> tuple[SMDPipeline, dict]:
    """A published model folder as an SMDPipeline on ``device`` (progress bar off), and its run summary."""
    pipeline = SMDPipeline.from_pretrained(folder).to(device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline, json.loads((folder / "run_summary.json").read_text())
