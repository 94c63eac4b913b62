"""The text-to-image task: fine-tune a Stable Diffusion 1.x / 2.x or SDXL UNet with SMD and / or E-TSDM.

What it plugs into the engine (:class:`~diffusers_smd.training.engine.Trainer`, the one loop), following diffusers'
``examples/text_to_image/train_text_to_image.py`` (and ``train_text_to_image_lora.py`` with ``--lora``):

* :meth:`TextToImageTask.setup`: the pretrained pipeline (:mod:`.stable_diffusion`); its VAE and text encoder(s)
  frozen on the device in the weight dtype of ``--mixed_precision`` (an SDXL VAE that asks for it,
  ``force_upcast``, stays in fp32 as in diffusers' SDXL script); its UNet wrapped with zero-initialised SMD modules
  when the objective needs them (``SMDUNet2DConditionModel.from_unet``: step 0 is the pretrained model), trained in
  full or through LoRA adapters (:mod:`.lora`); the noise scheduler (DDPM built from the pretrained scheduler's
  config, its E-TSDM variant with ``--etsdm``, ``--prediction_type`` applied); the captioned images
  (:func:`diffusers_smd.data.load_captioned_images`).
* :meth:`TextToImageTask.batch_inputs`: a batch -> (VAE latents x scaling_factor, ``{"encoder_hidden_states": ...}``
  and, for SDXL, ``"added_cond_kwargs": {"text_embeds": pooled, "time_ids": (original size, crop, target size)}``).
  The captions are encoded by the pipeline's own ``encode_prompt``, so training sees exactly the conditioning
  that sampling gives the UNet.
* :meth:`TextToImageTask.save_final`: a stock ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` folder
  whose UNet is the (SMD) UNet and whose scheduler is the pretrained sampling scheduler, or with ``--etsdm`` its
  E-TSDM variant (a scheduler without one, such as SD 1.5's PNDM, becomes E-TSDM DPM-Solver++, the package's
  default sampler); with ``--lora``: LoRA weights, SMD modules and that scheduler (:func:`.lora.save_lora_folder`).
* :meth:`TextToImageTask.sample_images`: one validation image per ``--validation_prompts`` prompt, through the
  pipeline, seeded with the run's seed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import numpy as np
import torch

from .task import TaskSetup, TrainingTask
from .text_to_image_config import TextToImageTrainingConfig

__all__ = ["TextToImageTask", "sampling_scheduler_for"]

WEIGHT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def sampling_scheduler_for(scheduler: Any, settings: Any, prediction_type: str | None = None) -> Any:
    """The scheduler a fine-tuned pipeline samples with: ``scheduler`` (the pretrained pipeline's), with
    ``prediction_type`` when given, turned into its E-TSDM variant with ``settings`` (None: E-TSDM off).

    A scheduler without an E-TSDM variant (PNDM, SD 1.5's) becomes the package's default sampler, DPM-Solver++
    (``diffusers_smd.sampling.make_scheduler("auto", ...)``), in its E-TSDM variant.
    """
    from ..sampling import AUTO, make_scheduler
    from ..schedulers import ETSDM_VARIANTS, ETSDMSchedulerMixin, convert_to_etsdm

    overrides = {"prediction_type": prediction_type} if prediction_type else {}
    base = type(scheduler).from_config(scheduler.config, **overrides)
    if settings is None:
        return base
    if isinstance(base, ETSDMSchedulerMixin) or type(base) in ETSDM_VARIANTS:
        return convert_to_etsdm(base, settings)
    return make_scheduler(AUTO, {**base.config, **settings.to_config()})[0]


def _cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` in ``dtype`` (cast only when it differs: diffusers warns on every dtype cast through ``to``)."""
    if any(p.dtype != dtype for p in module.parameters()):
        module.to(dtype=dtype)
    return module


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Silence one logger's warnings (the pipeline's caption-truncation warning, every batch)."""
    log = logging.getLogger(logger_name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


class TextToImageTask(TrainingTask):
    """Text-to-image fine-tuning of a Stable Diffusion 1.x / 2.x or SDXL pipeline (see the module docstring).

    ``train_dataset``: a ``datasets.Dataset`` with an image and a caption column, instead of ``--dataset_name`` /
    ``--train_data_dir`` (Python use: ``train(config, TextToImageTask(config, train_dataset=dataset))``).
    """

    name = "text-to-image"
    config_class = TextToImageTrainingConfig
    sample_tag = "validation"

    def __init__(self, config: TextToImageTrainingConfig, train_dataset: Any = None):
        super().__init__(config)
        if train_dataset is not None:
            import datasets

            if not isinstance(train_dataset, datasets.Dataset):
                raise ValueError(
                    f"train_dataset must be a datasets.Dataset with an image and a caption column, got "
                    f"{type(train_dataset).__name__}"
                )
        self.train_dataset = train_dataset
        self.layout = None
        self.resolution = None

    # -- checks before any work -------------------------------------------------------------------------
    def check(self) -> None:
        """The data source, the pretrained model's config files, --resolution and the E-TSDM settings."""
        from ..schedulers import etsdm_settings_from_config
        from .stable_diffusion import read_pretrained_layout, resolve_resolution

        config = self.config
        given = [config.dataset_name, config.train_data_dir, self.train_dataset]
        if sum(value is not None for value in given) != 1:
            raise ValueError(
                "give one data set: --dataset_name (a Hub or local data set with image and caption columns) or "
                "--train_data_dir (an image folder with metadata.jsonl captions)"
                + (", not both" if any(value is not None for value in given) else "")
            )
        self.layout = layout = read_pretrained_layout(
            config.pretrained_model_name_or_path, config.revision, config.cache_dir
        )
        self.resolution = resolve_resolution(layout, config.resolution)
        num_train_timesteps = int(layout.scheduler_config.get("num_train_timesteps", 1000))
        wanted = config.etsdm_settings(num_train_timesteps)
        recorded = etsdm_settings_from_config(layout.scheduler_config)
        if recorded is not None and recorded != wanted:
            raise ValueError(
                f"--etsdm: {config.pretrained_model_name_or_path!r} was trained with E-TSDM (threshold "
                f"{recorded.threshold}, {recorded.intervals} intervals); fine-tune it with --etsdm --etsdm_threshold "
                f"{recorded.threshold} --etsdm_intervals {recorded.intervals}"
            )

    # -- model --------------------------------------------------------------------------------------------
    def _wrap_for_objective(self, unet: torch.nn.Module) -> torch.nn.Module:
        from ..models import SMDUNet2DConditionModel

        if not self.config.uses_smd_model:
            if isinstance(unet, SMDUNet2DConditionModel):
                raise ValueError(
                    f"--objective {self.config.objective} trains a plain UNet2DConditionModel, but "
                    "--pretrained_model_name_or_path holds an SMDUNet2DConditionModel; use an SMD objective to "
                    "fine-tune it"
                )
            return unet
        if isinstance(unet, SMDUNet2DConditionModel):
            return unet  # fine-tuning an SMD model further
        return SMDUNet2DConditionModel.from_unet(unet, **self.config.smd_config())

    def _noise_scheduler(self, scheduler: Any) -> Any:
        """DDPM from the pretrained scheduler's config (as diffusers' script), --prediction_type, E-TSDM."""
        from diffusers import DDPMScheduler

        from ..schedulers import convert_to_etsdm

        config = self.config
        overrides = {"prediction_type": config.prediction_type} if config.prediction_type else {}
        noise_scheduler = DDPMScheduler.from_config(scheduler.config, **overrides)
        settings = config.etsdm_settings(int(noise_scheduler.config.num_train_timesteps))
        return noise_scheduler if settings is None else convert_to_etsdm(noise_scheduler, settings)

    def setup(self, accelerator) -> TaskSetup:
        from accelerate.utils import DistributedType

        from ..data import load_captioned_images
        from .lora import add_lora_adapters
        from .stable_diffusion import load_pretrained_pipeline

        config = self.config
        if self.layout is None:
            self.check()
        if config.lora and accelerator.distributed_type == DistributedType.FSDP:
            raise ValueError(
                "--lora is not supported under FSDP: LoRA keeps the UNet frozen and small to train; use DDP "
                "(training/accelerate_configs/multi_gpu.yaml)"
            )
        self.accelerator = accelerator
        self.device = accelerator.device
        self.weight_dtype = WEIGHT_DTYPES.get(str(accelerator.mixed_precision), torch.float32)
        pipeline = load_pretrained_pipeline(self.layout, config.revision, config.variant, config.cache_dir)
        self.noise_scheduler = self._noise_scheduler(pipeline.scheduler)
        self.sampling_scheduler = sampling_scheduler_for(
            pipeline.scheduler,
            config.etsdm_settings(int(self.noise_scheduler.config.num_train_timesteps)),
            config.prediction_type,
        )
        model = self._wrap_for_objective(pipeline.unet)
        trainable = None
        if config.lora:
            # frozen base weights in the weight dtype, adapters in fp32, as train_text_to_image_lora.py
            trainable = add_lora_adapters(_cast(model, self.weight_dtype), config.rank)
        else:
            _cast(model, torch.float32).requires_grad_(True)
        if config.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        vae_dtype = self.weight_dtype
        if self.layout.is_sdxl and pipeline.vae.config.force_upcast:
            vae_dtype = (
                torch.float32
            )  # the SDXL VAE overflows in fp16 (diffusers' SDXL script keeps it in fp32)
        frozen = [(pipeline.vae, vae_dtype), (pipeline.text_encoder, self.weight_dtype)]
        if self.layout.is_sdxl:
            frozen.append((pipeline.text_encoder_2, self.weight_dtype))
        for module, dtype in frozen:
            _cast(module.requires_grad_(False).eval(), dtype).to(self.device)
        pipeline.unet, pipeline.scheduler = model, self.sampling_scheduler
        self.pipeline = pipeline

        with accelerator.main_process_first():
            dataset = load_captioned_images(
                dataset_name=config.dataset_name,
                dataset_config_name=config.dataset_config_name,
                train_data_dir=config.train_data_dir,
                dataset=self.train_dataset,
                resolution=self.resolution,
                image_column=config.image_column,
                caption_column=config.caption_column,
                center_crop=config.center_crop,
                random_flip=config.random_flip,
                proportion_empty_prompts=config.proportion_empty_prompts,
                cache_dir=config.cache_dir,
                augmentation_seed=self.seed,
                max_samples=config.max_train_samples,
            )
        learning_rate = None
        if config.scale_lr:
            learning_rate = config.learning_rate * (
                config.gradient_accumulation_steps * config.train_batch_size * accelerator.num_processes
            )
        return TaskSetup(
            model=model,
            noise_scheduler=self.noise_scheduler,
            dataset=dataset,
            dataset_name=dataset.name,
            dataset_kind=dataset.kind,
            base_model=config.pretrained_model_name_or_path,
            resolution=self.resolution,
            num_channels=3,
            trainable_parameters=trainable,
            learning_rate=learning_rate,
        )

    # -- a batch ------------------------------------------------------------------------------------------
    def encode_captions(self, captions: list[str], batch: dict) -> dict[str, Any]:
        """The UNet's conditioning for ``captions`` through the pipeline's own ``encode_prompt`` (no guidance)."""
        pipeline = self.pipeline
        with torch.no_grad(), _quiet(type(pipeline).__module__):
            if not self.layout.is_sdxl:
                embeds, _ = pipeline.encode_prompt(list(captions), self.device, 1, False)
                return {"encoder_hidden_states": embeds}
            embeds, _, pooled, _ = pipeline.encode_prompt(
                list(captions), device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
        target = torch.tensor([self.resolution, self.resolution], device=self.device)
        time_ids = torch.cat(
            [batch["original_size"], batch["crop_top_left"], target.expand(len(captions), 2)], dim=1
        ).to(self.device, dtype=embeds.dtype)
        return {
            "encoder_hidden_states": embeds,
            "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids},
        }

    def batch_inputs(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """(VAE latents x scaling_factor in fp32, the UNet's text conditioning) of a batch of captioned images."""
        vae = self.pipeline.vae
        with torch.no_grad():
            pixels = batch["input"].to(self.device, dtype=vae.dtype)
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
        return latents.float(), self.encode_captions(batch["caption"], batch)

    # -- validation images and saving ---------------------------------------------------------------------
    def sample_captions(self) -> list[str] | None:
        prompts = self.config.validation_prompts
        return [f"{index}: {prompt}" for index, prompt in enumerate(prompts)] if prompts else None

    def sample_images(
        self, model: torch.nn.Module, noise_scheduler: Any, num_images: int, seed: int = 0
    ) -> np.ndarray | None:
        """One image per validation prompt through the pipeline, one generator seeded with the run's seed (as
        diffusers' log_validation); the global RNG is left untouched, so resuming stays exact."""
        from ..sampling import to_uint8

        prompts = self.config.validation_prompts
        if not prompts:
            return None
        pipeline = self.pipeline
        pipeline.unet = model
        devices = [self.device] if self.device.type == "cuda" else []
        images = []
        with torch.random.fork_rng(devices=devices), torch.no_grad(), self.accelerator.autocast():
            generator = torch.Generator().manual_seed(self.seed)
            for prompt in prompts:
                output = pipeline(
                    prompt,
                    num_inference_steps=self.config.validation_num_inference_steps,
                    height=self.resolution,
                    width=self.resolution,
                    generator=generator,
                    output_type="np",
                )
                images.append(output.images[0])
        return to_uint8(np.stack(images))

    def save_final(self, output_dir: str, model: torch.nn.Module, noise_scheduler: Any) -> None:
        """A stock pipeline folder with this UNet and the sampling scheduler (or, with --lora, the LoRA folder)."""
        from ..pipelines import write_loading_shims
        from .lora import save_lora_folder

        layout, config = self.layout, self.config
        scheduler = type(self.sampling_scheduler).from_config(self.sampling_scheduler.config)
        if config.lora:
            save_lora_folder(output_dir, model, layout.pipeline_class, scheduler)
            return
        kwargs: dict[str, Any] = {
            "revision": config.revision,
            "variant": config.variant,
            "cache_dir": config.cache_dir,
        }
        # Every other component as stored in the pretrained folder (not the weight-dtype copies trained with).
        pipeline = layout.pipeline_class.from_pretrained(
            layout.source, unet=None, scheduler=scheduler, **kwargs
        )
        pipeline.register_modules(unet=model)
        pipeline.save_pretrained(output_dir)
        write_loading_shims(output_dir)

    def save_model(self, model: torch.nn.Module, folder: str) -> None:
        """Checkpoints: the whole UNet (``unet/``), or with --lora only what is trained (``unet_lora/``)."""
        from .lora import save_lora_folder

        if self.config.lora:
            save_lora_folder(os.path.join(folder, "unet_lora"), model, self.layout.pipeline_class)
        else:
            super().save_model(model, folder)

    def load_model(self, model: torch.nn.Module, folder: str) -> None:
        from .lora import load_lora_folder_into

        if self.config.lora:
            load_lora_folder_into(model, os.path.join(folder, "unet_lora"))
        else:
            super().load_model(model, folder)
