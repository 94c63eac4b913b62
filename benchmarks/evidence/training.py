"""Train one benchmark model with the package's pieces; save it as diffusers model folders.

The loop composes what the package and diffusers provide: ``UNet2DModel`` (wrapped by
``SMDUNet2DModel.from_unet`` for SMD models), ``DDPMScheduler`` / ``ETSDMDDPMScheduler`` (E-TSDM's
condition f(t) comes from the scheduler's ``condition_timesteps``), ``build_objective`` (no loss math
here), ``diffusers.optimization.get_scheduler`` and ``diffusers.training_utils.EMAModel``. Every model of
a seed starts from the same UNet initialisation and sees the same batches and noise draws.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from diffusers_smd.losses import build_objective
from diffusers_smd.models import SMDUNet2DModel
from diffusers_smd.schedulers import ETSDMDDPMScheduler

from .store import publish_folder_atomic

__all__ = ["build_model", "build_noise_scheduler", "load_trained", "train_unit"]


def build_noise_scheduler(config: dict, etsdm: bool):
    """The training (DDPM) scheduler of a model: E-TSDM variant when ``etsdm``."""
    schedule = config["noise_schedule"]
    kwargs = {
        "num_train_timesteps": schedule["num_train_timesteps"],
        "beta_schedule": schedule.get("beta_schedule", "linear"),
        "prediction_type": schedule["prediction_type"],
    }
    if etsdm:
        return ETSDMDDPMScheduler(
            **kwargs,
            etsdm_threshold=config["etsdm"]["threshold"],
            etsdm_intervals=config["etsdm"]["intervals"],
        )
    return DDPMScheduler(**kwargs)


def build_model(config: dict, smd: bool, seed: int) -> torch.nn.Module:
    """The denoiser: a UNet2DModel initialised from ``seed``, wrapped with the SMD modules when ``smd``."""
    data = config["data"]
    unet_config = dict(config["unet"])
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        if key in unet_config:
            unet_config[key] = tuple(unet_config[key])
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=data["resolution"],
        in_channels=data["channels"],
        out_channels=data["channels"],
        **unet_config,
    )
    if not smd:
        return unet
    smd_config = dict(config["smd"])
    if smd_config.get("identifier_block_out_channels") is not None:
        smd_config["identifier_block_out_channels"] = tuple(smd_config["identifier_block_out_channels"])
    return SMDUNet2DModel.from_unet(unet, **smd_config)


def _batches(num_images: int, batch_size: int, generator: torch.Generator):
    """Endless shuffled mini-batch indices: a fresh permutation per epoch, drawn from ``generator``."""
    while True:
        order = torch.randperm(num_images, generator=generator)
        for start in range(0, num_images - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def train_unit(config: dict, model_name: str, seed: int, train_images: torch.Tensor, folder: Path) -> dict:
    """Train ``model_name`` with ``seed`` and publish ``folder`` (unet/, scheduler/, run_summary.json) atomically."""
    spec = config["models"][model_name]
    training = config["training"]
    device = torch.device(config["device"])
    model = build_model(config, spec["smd"], seed).to(device)
    noise_scheduler = build_noise_scheduler(config, spec["etsdm"])
    objective = build_objective(config["smd_objective"] if spec["smd"] else "vanilla")
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=training["learning_rate"], weight_decay=training.get("weight_decay", 0.0)
    )
    lr_scheduler = get_scheduler(
        training.get("lr_scheduler", "constant"),
        optimizer=optimizer,
        num_warmup_steps=training.get("lr_warmup_steps", 0),
        num_training_steps=training["steps"],
    )
    ema = EMAModel(
        model.parameters(),
        decay=training.get("ema_max_decay", 0.9999),
        use_ema_warmup=True,
        power=training.get("ema_power", 0.75),
    )
    batch_size = min(training["batch_size"], len(train_images))
    data_generator = torch.Generator().manual_seed(seed)
    noise_generator = torch.Generator(device=device).manual_seed(10_000 + seed)
    batches = _batches(len(train_images), batch_size, data_generator)
    images = train_images.to(device)

    started = time.perf_counter()
    losses = []
    model.train()
    for step in range(training["steps"]):
        batch = images[next(batches).to(device)]
        loss = objective(model, noise_scheduler, batch, generator=noise_generator).mean()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(
                f"non-finite loss {loss.item()} at step {step} of {model_name} seed {seed}"
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), training.get("grad_clip", 1.0))
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(model.parameters())
        losses.append(loss.item())
    seconds = time.perf_counter() - started
    ema.copy_to(model.parameters())
    model.eval()

    tail = losses[-max(1, len(losses) // 10) :]
    summary = {
        "model": model_name,
        "seed": seed,
        "model_class": type(model).__name__,
        "objective": objective.name,
        "etsdm": spec["etsdm"],
        "etsdm_threshold": config["etsdm"]["threshold"] if spec["etsdm"] else None,
        "etsdm_intervals": config["etsdm"]["intervals"] if spec["etsdm"] else None,
        "global_step": training["steps"],
        "batch_size": batch_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": sum(tail) / len(tail),
        "first_loss": losses[0],
        "wall_clock_seconds": seconds,
        "ema": True,
    }

    def build(tmp: Path) -> None:
        model.save_pretrained(tmp / "unet")
        noise_scheduler.save_pretrained(tmp / "scheduler")
        (tmp / "run_summary.json").write_text(json.dumps(summary, indent=1) + "\n")

    publish_folder_atomic(build, folder)
    return summary


def load_trained(folder: Path, device: str | torch.device = "cpu"):
    """Load a published model folder: (model in eval mode, training scheduler, run summary)."""
    summary = json.loads((folder / "run_summary.json").read_text())
    model_class = {"UNet2DModel": UNet2DModel, "SMDUNet2DModel": SMDUNet2DModel}[summary["model_class"]]
    model = model_class.from_pretrained(folder / "unet", use_safetensors=True).to(device).eval()
    scheduler_class = ETSDMDDPMScheduler if summary["etsdm"] else DDPMScheduler
    scheduler = scheduler_class.from_pretrained(folder / "scheduler")
    return model, scheduler, summary
