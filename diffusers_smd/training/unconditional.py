"""The unconditional pixel-space task: a ``UNet2DModel`` (or its SMD wrapper) trained on images.

What this task decides, and the engine does not: which network to build or load (from scratch, from a
UNet config, or fine-tuned from a pretrained UNet / pipeline), its noise schedule (DDPM, or E-TSDM DDPM),
the training images (:mod:`diffusers_smd.data`), how a batch becomes the clean sample (the images; no
conditioning), what the saved output is (an :class:`~diffusers_smd.SMDPipeline` folder) and how the
sample grids are drawn (:func:`diffusers_smd.sampling.generate`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from .config import UnconditionalTrainingConfig
from .task import TaskSetup, TrainingTask, check_denoiser_config

__all__ = [
    "DEFAULT_RESOLUTION",
    "UnconditionalImageTask",
    "build_noise_scheduler",
    "default_unet_config",
    "downsampling_factor",
]

DEFAULT_RESOLUTION = 16


def default_unet_config(
    resolution: int, num_channels: int, block_out_channels, layers_per_block: int
) -> dict:
    """Config of the small from-scratch UNet2DModel (no attention; GroupNorm groups that divide every width)."""
    from ..models.identifier import largest_group_count

    widths = tuple(block_out_channels)
    return {
        "sample_size": resolution,
        "in_channels": num_channels,
        "out_channels": num_channels,
        "layers_per_block": layers_per_block,
        "block_out_channels": widths,
        "down_block_types": ("DownBlock2D",) * len(widths),
        "up_block_types": ("UpBlock2D",) * len(widths),
        "norm_num_groups": largest_group_count(widths),
    }


def downsampling_factor(unet_config) -> int:
    """How many times a UNet2DModel halves the resolution: every down block but the last downsamples."""
    return 2 ** (len(unet_config["down_block_types"]) - 1)


def build_noise_scheduler(config: UnconditionalTrainingConfig, base_config: dict | None = None):
    """The training noise scheduler: DDPM, or E-TSDM DDPM with ``--etsdm`` (a pretrained pipeline's schedule wins)."""
    from diffusers import DDPMScheduler

    if base_config is None:
        base_config = {
            "num_train_timesteps": config.ddpm_num_steps,
            "beta_schedule": config.ddpm_beta_schedule,
            "prediction_type": config.prediction_type,
        }
    settings = config.etsdm_settings(int(base_config.get("num_train_timesteps", config.ddpm_num_steps)))
    if settings is None:
        return DDPMScheduler.from_config(base_config)
    from ..schedulers import ETSDMDDPMScheduler

    return ETSDMDDPMScheduler.from_config(base_config, **settings.to_config())


def _physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not available on this platform
        return None


def _sample_size(config) -> int | None:
    size = config.get("sample_size")
    if isinstance(size, (list, tuple)):
        return size[0] if len(set(size)) == 1 else None
    return size


def _check_unet_config(config, flag: str) -> None:
    check_denoiser_config(config, flag, "this script trains unconditional models")


class UnconditionalImageTask(TrainingTask):
    """Unconditional image generation with a pixel-space ``UNet2DModel`` / ``SMDUNet2DModel``."""

    name = "unconditional-image-generation"
    config_class = UnconditionalTrainingConfig

    def __init__(self, config: UnconditionalTrainingConfig):
        super().__init__(config)

    # -- model ------------------------------------------------------------------------------------------
    def _load_config(self, loader, name_or_path: str, subfolder: str | None) -> dict | None:
        try:
            return dict(
                loader.load_config(
                    name_or_path,
                    subfolder=subfolder,
                    cache_dir=self.config.cache_dir,
                    revision=self.config.revision,
                )
            )
        except (OSError, ValueError):
            return None

    def _load_pretrained(self) -> tuple[torch.nn.Module, dict | None]:
        """The UNet (plain or SMD) and, for a pipeline, its scheduler config."""
        from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel

        from ..models import SMDUNet2DModel

        source = self.config.pretrained_model_name_or_path
        flag = f"--pretrained_model_name_or_path {source!r}"
        if source.startswith(("/", ".", "~")) and not os.path.exists(os.path.expanduser(source)):
            raise ValueError(f"{flag}: no such folder")
        index = self._load_config(DiffusionPipeline, source, None)
        subfolder = "unet" if index is not None else None
        config = self._load_config(UNet2DModel, source, subfolder)
        if config is None:
            offline = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
            raise ValueError(
                f"{flag}: found neither a UNet config.json nor a pipeline model_index.json with a unet/ folder; "
                f"a Hub repo id needs the network or the local Hub cache{offline}"
            )
        classes = {"UNet2DModel": UNet2DModel, "SMDUNet2DModel": SMDUNet2DModel}
        class_name = config.get("_class_name")
        if class_name not in classes:
            raise ValueError(
                f"{flag}: incompatible model: its UNet is a {class_name!r}; this script fine-tunes unconditional "
                f"UNet2DModel and SMDUNet2DModel models"
            )
        model = classes[class_name].from_pretrained(
            source, subfolder=subfolder, cache_dir=self.config.cache_dir, revision=self.config.revision
        )
        scheduler_config = (
            self._load_config(DDPMScheduler, source, "scheduler") if index is not None else None
        )
        return model, scheduler_config

    def _from_scratch(self) -> torch.nn.Module:
        from diffusers import UNet2DModel

        config = self.config
        if config.model_config_name_or_path is not None:
            unet_config = self._load_config(UNet2DModel, config.model_config_name_or_path, None)
            if unet_config is None:
                raise ValueError(
                    f"--model_config_name_or_path {config.model_config_name_or_path!r}: no UNet config found"
                )
            if unet_config.get("_class_name", "UNet2DModel") != "UNet2DModel":
                raise ValueError(
                    f"--model_config_name_or_path: a {unet_config.get('_class_name')!r} config; a UNet2DModel "
                    "config is needed"
                )
            if config.resolution is not None:
                unet_config["sample_size"] = config.resolution
            if config.num_channels is not None:
                unet_config["in_channels"] = unet_config["out_channels"] = config.num_channels
            flag = "--model_config_name_or_path"
        else:
            unet_config = default_unet_config(
                config.resolution or DEFAULT_RESOLUTION,
                config.num_channels or self._default_channels(),
                config.block_out_channels,
                config.layers_per_block,
            )
            flag = "--block_out_channels"
        _check_unet_config(unet_config, flag)
        return UNet2DModel.from_config(unet_config)

    def _default_channels(self) -> int:
        from ..data import BUILTIN_DIGITS

        if self.config.train_data_dir is None and self.config.dataset_name in (None, BUILTIN_DIGITS):
            return 1
        return 3  # image data sets: RGB unless --num_channels 1

    def _wrap_for_objective(self, unet: torch.nn.Module) -> torch.nn.Module:
        """The trained network: the plain UNet for objectives that need none, else an SMD wrapper (zero-initialised)."""
        from diffusers import UNet2DModel

        from ..models import SMDUNet2DModel

        if not self.config.uses_smd_model:
            if not isinstance(unet, UNet2DModel):
                raise ValueError(
                    f"--objective {self.config.objective} trains a plain UNet2DModel, but "
                    f"--pretrained_model_name_or_path holds a {type(unet).__name__}; use an SMD objective to "
                    "fine-tune it"
                )
            return unet
        if not isinstance(unet, UNet2DModel):
            return unet  # already an SMD model (fine-tuning an SMD checkpoint)
        return SMDUNet2DModel.from_unet(unet, **self.config.smd_config())

    def build_model(self) -> tuple[torch.nn.Module, Any, dict]:
        """The network, its noise scheduler and the image facts; every model-related check runs here."""
        config = self.config
        scheduler_config = None
        if config.pretrained_model_name_or_path is not None:
            unet, scheduler_config = self._load_pretrained()
            flag = "--pretrained_model_name_or_path"
        else:
            unet = self._from_scratch()
            flag = (
                "--model_config_name_or_path" if config.model_config_name_or_path else "--block_out_channels"
            )
        denoiser = getattr(unet, "unet", unet).config
        _check_unet_config(denoiser, flag)
        resolution = config.resolution or _sample_size(denoiser) or DEFAULT_RESOLUTION
        if config.pretrained_model_name_or_path is not None and _sample_size(denoiser) not in (
            None,
            resolution,
        ):
            raise ValueError(
                f"--resolution {resolution} differs from the pretrained model's sample_size {_sample_size(denoiser)} "
                f"(--pretrained_model_name_or_path); fine-tune at the model's resolution"
            )
        factor = downsampling_factor(denoiser)
        if resolution % factor:
            raise ValueError(
                f"--resolution {resolution} is not divisible by the UNet's downsampling factor {factor} "
                f"({len(denoiser['down_block_types'])} stages); use a multiple of {factor}"
            )
        if config.num_channels is not None and config.num_channels != denoiser["in_channels"]:
            raise ValueError(
                f"--num_channels {config.num_channels} does not match the model's in_channels "
                f"{denoiser['in_channels']} ({flag})"
            )
        model = self._wrap_for_objective(unet)
        noise_scheduler = build_noise_scheduler(config, scheduler_config)
        num_train_timesteps = noise_scheduler.config.num_train_timesteps
        if config.ddpm_num_inference_steps is None:
            config.ddpm_num_inference_steps = num_train_timesteps  # the grids sample every training timestep
        elif config.ddpm_num_inference_steps > num_train_timesteps:
            raise ValueError(
                f"--ddpm_num_inference_steps must be in [1, {num_train_timesteps}] (the model's training "
                f"timesteps), got {config.ddpm_num_inference_steps}"
            )
        facts = {"resolution": resolution, "num_channels": denoiser["in_channels"]}
        return model, noise_scheduler, facts

    # -- task interface ---------------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse a resolution whose images alone would not fit in this machine's memory (before any allocation)."""
        config = self.config
        if config.resolution is None:
            return
        channels = config.num_channels or 3
        batch_bytes = config.train_batch_size * channels * config.resolution**2 * 4
        total = _physical_memory_bytes()
        if total is not None and batch_bytes > total:
            raise ValueError(
                f"--resolution {config.resolution}: one batch of {config.train_batch_size} images alone needs "
                f"{batch_bytes / 2**30:.1f} GiB, more than this machine's {total / 2**30:.1f} GiB of memory "
                "(before any network activation); use a smaller --resolution or --train_batch_size"
            )

    def setup(self, accelerator) -> TaskSetup:
        from ..data import load_training_images

        model, noise_scheduler, facts = self.build_model()
        config = self.config
        with accelerator.main_process_first():
            dataset = load_training_images(
                dataset_name=config.dataset_name,
                dataset_config_name=config.dataset_config_name,
                train_data_dir=config.train_data_dir,
                resolution=facts["resolution"],
                num_channels=facts["num_channels"],
                center_crop=config.center_crop,
                random_flip=config.random_flip,
                cache_dir=config.cache_dir,
                image_column=config.image_column,
                augmentation_seed=self.seed,
                max_samples=config.max_train_samples,
            )
        return TaskSetup(
            model=model,
            noise_scheduler=noise_scheduler,
            dataset=dataset,
            dataset_name=dataset.name,
            dataset_kind=dataset.kind,
            base_model=config.pretrained_model_name_or_path,
            resolution=facts["resolution"],
            num_channels=facts["num_channels"],
        )

    def batch_inputs(self, batch: dict) -> tuple[torch.Tensor, dict | None]:
        return batch["input"], None

    def save_final(self, output_dir: str, model: torch.nn.Module, noise_scheduler: Any) -> None:
        from ..pipelines import SMDPipeline

        scheduler = type(noise_scheduler).from_config(noise_scheduler.config)
        SMDPipeline(unet=model, scheduler=scheduler).save_pretrained(output_dir)

    def sample_images(
        self, model: torch.nn.Module, noise_scheduler: Any, num_images: int, seed: int = 0
    ) -> np.ndarray:
        from ..pipelines import SMDPipeline
        from ..sampling import generate

        scheduler = type(noise_scheduler).from_config(noise_scheduler.config)
        pipeline = SMDPipeline(unet=model, scheduler=scheduler)
        pipeline.set_progress_bar_config(disable=True)
        steps = self.config.ddpm_num_inference_steps
        return generate(pipeline, num_images, steps, seed=seed, batch_size=max(1, num_images))
