"""The SMD / E-TSDM training loop behind ``training/train_smd.py`` and ``diffusers-smd train``.

It follows diffusers' ``examples/unconditional_image_generation/train_unconditional.py``:
an ``Accelerator`` with a ``ProjectConfiguration``, ``save_state`` / ``load_state`` with hooks that
write ``unet/`` and ``unet_ema/`` through ``save_pretrained``, ``EMAModel`` (store / copy_to /
restore around sampling), ``get_scheduler``, a tqdm bar on the main process, TensorBoard logs of
loss, learning rate and sample grids, ``checkpoint-<step>`` folders. It composes package pieces
and holds no model or loss math: the network comes from :mod:`diffusers_smd.models`, the loss from
:func:`diffusers_smd.losses.build_objective`, the E-TSDM rule from the schedulers, the data from
:mod:`diffusers_smd.data`, checkpoint files from :mod:`diffusers_smd.checkpointing`.

Reproducibility: with ``--seed`` the data order comes from accelerate's seedable sampler, the
noise from torch's global RNG (saved and restored by ``save_state`` / ``load_state``), and the data
loader never draws from the global RNG, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

import torch

from .checkpointing import list_checkpoints, read_run_state, resolve_resume_checkpoint, save_checkpoint
from .training_config import args_to_json_dict, check_args, parse_args

__all__ = ["NonFiniteLossError", "TrainingSetup", "build_noise_scheduler", "build_training_model", "main"]

logger = logging.getLogger("diffusers_smd.training")

SMD_OBJECTIVES = ("smd", "smd-mixture")
DEFAULT_RESOLUTION = 16


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss became NaN or infinite (the last good checkpoint is kept)."""


@dataclass
class TrainingSetup:
    """What :func:`build_training_model` decided: the network, its noise schedule and the image shape."""

    model: torch.nn.Module
    noise_scheduler: Any
    resolution: int
    num_channels: int
    base_model: str | None


# ----------------------------------------------------------------------------- model and schedule


def default_unet_config(
    resolution: int, num_channels: int, block_out_channels, layers_per_block: int
) -> dict:
    """Config of the small from-scratch UNet2DModel (no attention; GroupNorm groups that divide every width)."""
    widths = tuple(block_out_channels)
    groups = math.gcd(*widths)
    groups = max(g for g in range(1, min(32, groups) + 1) if groups % g == 0)
    return {
        "sample_size": resolution,
        "in_channels": num_channels,
        "out_channels": num_channels,
        "layers_per_block": layers_per_block,
        "block_out_channels": widths,
        "down_block_types": ("DownBlock2D",) * len(widths),
        "up_block_types": ("UpBlock2D",) * len(widths),
        "norm_num_groups": groups,
    }


def downsampling_factor(unet_config) -> int:
    """How many times a UNet2DModel halves the resolution: every down block but the last downsamples."""
    return 2 ** (len(unet_config["down_block_types"]) - 1)


def _load_config(loader, name_or_path: str, subfolder: str | None, args) -> dict | None:
    try:
        return dict(
            loader.load_config(
                name_or_path, subfolder=subfolder, cache_dir=args.cache_dir, revision=args.revision
            )
        )
    except (OSError, ValueError):
        return None


def _load_pretrained(args) -> tuple[torch.nn.Module, dict | None]:
    """The UNet (plain or SMD) and, for a pipeline, its scheduler config, from --pretrained_model_name_or_path."""
    from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel

    flag = f"--pretrained_model_name_or_path {args.pretrained_model_name_or_path!r}"
    source = args.pretrained_model_name_or_path
    if source.startswith(("/", ".", "~")) and not os.path.exists(os.path.expanduser(source)):
        raise ValueError(f"{flag}: no such folder")
    index = _load_config(DiffusionPipeline, source, None, args)
    subfolder = "unet" if index is not None else None
    config = _load_config(UNet2DModel, source, subfolder, args)
    if config is None:
        raise ValueError(
            f"{flag}: found neither a UNet config.json nor a pipeline model_index.json with a unet/ folder"
        )
    class_name = config.get("_class_name")
    if class_name == "UNet2DModel":
        model = UNet2DModel.from_pretrained(
            source, subfolder=subfolder, cache_dir=args.cache_dir, revision=args.revision
        )
    elif class_name == "SMDUNet2DModel":
        from .models import SMDUNet2DModel

        model = SMDUNet2DModel.from_pretrained(
            source, subfolder=subfolder, cache_dir=args.cache_dir, revision=args.revision
        )
    else:
        raise ValueError(
            f"{flag}: incompatible model: its UNet is a {class_name!r}; this script fine-tunes unconditional "
            f"UNet2DModel and SMDUNet2DModel models"
        )
    scheduler_config = _load_config(DDPMScheduler, source, "scheduler", args) if index is not None else None
    return model, scheduler_config


def _denoiser_config(model: torch.nn.Module):
    """The plain UNet2DModel config inside ``model`` (the model itself, or the UNet an SMD wrapper holds)."""
    from diffusers import UNet2DModel

    if isinstance(model, UNet2DModel):
        return model.config
    for child in model.children():
        if isinstance(child, UNet2DModel):
            return child.config
    raise ValueError(f"cannot find the UNet2DModel inside {type(model).__name__}")


def _smd_config(args, unet_config) -> dict:
    config = {"latent_dim": args.smd_latent_dim, "num_hypernet_layers": args.smd_hypernet_layers}
    if args.smd_identifier_channels is not None:
        config["identifier_block_out_channels"] = tuple(args.smd_identifier_channels)
    return config


def wrap_for_objective(unet: torch.nn.Module, args) -> torch.nn.Module:
    """The network the objective trains: the plain UNet for 'vanilla', an SMD wrapper (zero-initialised) otherwise."""
    from diffusers import UNet2DModel

    if args.objective not in SMD_OBJECTIVES:
        if not isinstance(unet, UNet2DModel):
            raise ValueError(
                f"--objective vanilla trains a plain UNet2DModel, but --pretrained_model_name_or_path holds a "
                f"{type(unet).__name__}; use --objective smd or smd-mixture to fine-tune it"
            )
        return unet
    if not isinstance(unet, UNet2DModel):
        return unet  # already an SMD model (fine-tuning an SMD checkpoint)
    from .models import SMDUNet2DModel

    return SMDUNet2DModel.from_unet(unet, **_smd_config(args, unet.config))


def build_noise_scheduler(args, base_config: dict | None = None):
    """The training noise scheduler: DDPM, or E-TSDM DDPM with ``--etsdm`` (a pretrained pipeline's schedule wins)."""
    from diffusers import DDPMScheduler

    if base_config is None:
        base_config = {
            "num_train_timesteps": args.ddpm_num_steps,
            "beta_schedule": args.ddpm_beta_schedule,
            "prediction_type": args.prediction_type,
        }
    if not args.etsdm:
        return DDPMScheduler.from_config(base_config)
    from .schedulers import ETSDMDDPMScheduler

    num_train_timesteps = base_config.get("num_train_timesteps", args.ddpm_num_steps)
    threshold = (
        args.etsdm_threshold if args.etsdm_threshold is not None else max(1, num_train_timesteps // 10)
    )
    if threshold > num_train_timesteps:
        raise ValueError(
            f"--etsdm_threshold ({threshold}) exceeds the model's num_train_timesteps ({num_train_timesteps})"
        )
    if args.etsdm_intervals > threshold:
        raise ValueError(
            f"--etsdm_intervals {args.etsdm_intervals} is more than the E-TSDM threshold {threshold} allows "
            f"(each interval must hold at least one timestep); lower --etsdm_intervals or raise --etsdm_threshold"
        )
    return ETSDMDDPMScheduler.from_config(
        base_config, etsdm_threshold=threshold, etsdm_intervals=args.etsdm_intervals
    )


def build_training_model(args) -> TrainingSetup:
    """Build (or load) the network and noise schedule the flags ask for; every model-related check runs here."""
    from diffusers import UNet2DModel

    scheduler_config = None
    base_model = None
    if args.pretrained_model_name_or_path is not None:
        unet, scheduler_config = _load_pretrained(args)
        base_model = args.pretrained_model_name_or_path
        flag = "--pretrained_model_name_or_path"
    else:
        if args.model_config_name_or_path is not None:
            config = _load_config(UNet2DModel, args.model_config_name_or_path, None, args)
            if config is None:
                raise ValueError(
                    f"--model_config_name_or_path {args.model_config_name_or_path!r}: no UNet config found"
                )
            if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
                raise ValueError(
                    f"--model_config_name_or_path: a {config.get('_class_name')!r} config; a UNet2DModel config is needed"
                )
            if args.resolution is not None:
                config["sample_size"] = args.resolution
            if args.num_channels is not None:
                config["in_channels"] = config["out_channels"] = args.num_channels
        else:
            config = default_unet_config(
                args.resolution or DEFAULT_RESOLUTION,
                args.num_channels or _default_channels(args),
                args.block_out_channels,
                args.layers_per_block,
            )
        flag = "--model_config_name_or_path" if args.model_config_name_or_path else "--block_out_channels"
        _check_unet_config(config, args, flag)
        unet = UNet2DModel.from_config(config)
    denoiser = _denoiser_config(unet)
    _check_unet_config(denoiser, args, flag)
    resolution = args.resolution or _sample_size(denoiser) or DEFAULT_RESOLUTION
    if args.pretrained_model_name_or_path is not None and _sample_size(denoiser) not in (None, resolution):
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
    if args.num_channels is not None and args.num_channels != denoiser["in_channels"]:
        raise ValueError(
            f"--num_channels {args.num_channels} does not match the model's in_channels {denoiser['in_channels']} ({flag})"
        )
    model = wrap_for_objective(unet, args)
    noise_scheduler = build_noise_scheduler(args, scheduler_config)
    num_train_timesteps = noise_scheduler.config.num_train_timesteps
    if args.ddpm_num_inference_steps is None:
        args.ddpm_num_inference_steps = num_train_timesteps
    elif args.ddpm_num_inference_steps > num_train_timesteps:
        raise ValueError(
            f"--ddpm_num_inference_steps must be in [1, {num_train_timesteps}] (the model's training "
            f"timesteps), got {args.ddpm_num_inference_steps}"
        )
    return TrainingSetup(model, noise_scheduler, resolution, denoiser["in_channels"], base_model)


def _sample_size(config) -> int | None:
    size = config.get("sample_size")
    if isinstance(size, (list, tuple)):
        return size[0] if len(set(size)) == 1 else None
    return size


def _default_channels(args) -> int:
    from .data import BUILTIN_DIGITS

    if args.train_data_dir is None and args.dataset_name in (None, BUILTIN_DIGITS):
        return 1
    return 3  # image data sets: RGB unless --num_channels 1


def _check_unet_config(config, args, flag: str) -> None:
    if config.get("out_channels", config["in_channels"]) != config["in_channels"]:
        raise ValueError(
            f"{flag}: incompatible model: out_channels {config['out_channels']} != in_channels "
            f"{config['in_channels']} (learned-variance models are not supported)"
        )
    if config.get("num_class_embeds") is not None or config.get("class_embed_type") is not None:
        raise ValueError(
            f"{flag}: incompatible model: the UNet is class-conditional; this script trains unconditional models"
        )


# ----------------------------------------------------------------------------- helpers


def _prepare_output_dir(args, accelerator) -> None:
    """Refuse to train over a finished model or old checkpoints unless resuming or --overwrite_output_dir."""
    out = args.output_dir
    existing = []
    if os.path.isfile(os.path.join(out, "model_index.json")):
        existing.append("a saved pipeline (model_index.json)")
    checkpoints = list_checkpoints(out)
    if checkpoints:
        existing.append(f"{len(checkpoints)} checkpoint folder(s)")
    if existing and args.resume_from_checkpoint is None and not args.overwrite_output_dir:
        raise ValueError(
            f"--output_dir {out!r} already holds {' and '.join(existing)}. Pass --resume_from_checkpoint latest "
            f"to continue that run, --overwrite_output_dir to start over there, or choose another --output_dir."
        )
    if accelerator.is_main_process:
        os.makedirs(out, exist_ok=True)
        if args.overwrite_output_dir and args.resume_from_checkpoint is None:
            for path in checkpoints:
                shutil.rmtree(path)
    accelerator.wait_for_everyone()


def _count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _parameter_counts(model: torch.nn.Module) -> dict:
    from diffusers import UNet2DModel

    total = _count_parameters(model)
    if isinstance(model, UNet2DModel):
        return {"total": total, "unet": total, "smd_modules": 0}
    unet = next((c for c in model.children() if isinstance(c, UNet2DModel)), None)
    unet_count = _count_parameters(unet) if unet is not None else None
    return {
        "total": total,
        "unet": unet_count,
        "smd_modules": None if unet_count is None else total - unet_count,
    }


def _tracker_config(args) -> dict:
    config = {}
    for key, value in args_to_json_dict(args).items():
        config[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return config


def sample_grid(unet, noise_scheduler, num_images: int, num_inference_steps: int, seed: int = 0):
    """Sample ``num_images`` images with an :class:`~diffusers_smd.SMDPipeline` and return (PIL grid, uint8 array NHWC).

    Runs under ``torch.random.fork_rng`` with its own generator so sampling never changes the
    training RNG stream (a resumed run stays identical to an uninterrupted one).
    """
    import numpy as np
    from diffusers.utils import make_image_grid

    from .pipelines import SMDPipeline

    scheduler = type(noise_scheduler).from_config(noise_scheduler.config)
    pipeline = SMDPipeline(unet=unet, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    with torch.random.fork_rng(devices=[]):
        generator = torch.Generator(device="cpu").manual_seed(seed)
        images = pipeline(
            batch_size=num_images,
            generator=generator,
            num_inference_steps=num_inference_steps,
            output_type="np",
        ).images
    array = np.clip(np.round(np.asarray(images) * 255), 0, 255).astype(np.uint8)
    pil = [_to_pil(image) for image in array]
    columns = int(math.ceil(math.sqrt(num_images)))
    rows = int(math.ceil(num_images / columns))
    from PIL import Image

    pil += [Image.new(pil[0].mode, pil[0].size)] * (rows * columns - len(pil))
    return make_image_grid(pil, rows=rows, cols=columns), array


def _to_pil(array):
    from PIL import Image

    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def _save_pipeline(unet, noise_scheduler, output_dir: str) -> None:
    from .pipelines import SMDPipeline

    scheduler = type(noise_scheduler).from_config(noise_scheduler.config)
    SMDPipeline(unet=unet, scheduler=scheduler).save_pretrained(output_dir)


def _write_json(path: str, payload: dict) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(temporary, path)


def _check_push_to_hub(args) -> None:
    if not args.push_to_hub:
        return
    try:
        from .hub import check_repo_id
    except ImportError as error:
        raise ValueError(f"--push_to_hub: Hub publishing is not available ({error})") from error
    check_repo_id(args.hub_model_id, name="--hub_model_id")


# ----------------------------------------------------------------------------- the loop


def main(args: argparse.Namespace | None = None) -> dict:
    """Train as the flags say; return the run summary (also written to run_summary.json)."""
    from accelerate import Accelerator
    from accelerate.utils import (
        DataLoaderConfiguration,
        DistributedType,
        ProjectConfiguration,
        broadcast_object_list,
        set_seed,
    )
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from .data import load_training_images
    from .losses import build_objective

    if args is None:
        args = parse_args()
    check_args(args)
    started = time.time()
    # Errors about flags come first, before processes, models or data are touched.
    resume_path = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    _check_push_to_hub(args)

    logging_dir = os.path.join(args.output_dir, args.logging_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.logger,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=logging_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    if args.logger == "tensorboard":
        from accelerate.utils import is_tensorboard_available

        if not is_tensorboard_available():
            raise ValueError("--logger tensorboard needs the tensorboard package: pip install tensorboard")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    _prepare_output_dir(args, accelerator)

    # One seed on every process: the same initial weights and the same data order everywhere.
    seed = (
        args.seed
        if args.seed is not None
        else read_run_state(resume_path).get("seed")
        if resume_path
        else None
    )
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
    seed = broadcast_object_list([seed])[0]
    set_seed(seed)
    setup = build_training_model(args)
    model, noise_scheduler = setup.model, setup.noise_scheduler
    with accelerator.main_process_first():
        dataset = load_training_images(
            dataset_name=args.dataset_name,
            dataset_config_name=args.dataset_config_name,
            train_data_dir=args.train_data_dir,
            resolution=setup.resolution,
            num_channels=setup.num_channels,
            center_crop=args.center_crop,
            random_flip=args.random_flip,
            cache_dir=args.cache_dir,
            image_column=args.image_column,
            augmentation_seed=seed,
        )
    objective_kwargs = (
        {"num_mixture_samples": args.smd_mixture_samples}
        if args.objective == "smd-mixture"
        else {"snr_gamma": args.snr_gamma}
    )
    objective = build_objective(args.objective, **objective_kwargs)
    logger.info(
        "data: %s; model: %s (%s parameters)",
        dataset.description,
        type(model).__name__,
        _count_parameters(model),
    )

    ema_model = None
    if args.use_ema:
        ema_model = EMAModel(
            model.parameters(),
            decay=args.ema_max_decay,
            use_ema_warmup=True,
            inv_gamma=args.ema_inv_gamma,
            power=args.ema_power,
            model_cls=type(model),
            model_config=model.config,
        )
    model_cls = type(model)

    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            if ema_model is not None:
                ema_model.save_pretrained(os.path.join(output_dir, "unet_ema"))
            for saved in models:
                saved.save_pretrained(os.path.join(output_dir, "unet"))
                weights.pop()

    def load_model_hook(models, input_dir):
        if ema_model is not None:
            loaded = EMAModel.from_pretrained(os.path.join(input_dir, "unet_ema"), model_cls)
            ema_model.load_state_dict(loaded.state_dict())
            ema_model.to(accelerator.device)
            del loaded
        for _ in range(len(models)):
            target = models.pop()
            loaded = model_cls.from_pretrained(input_dir, subfolder="unet")
            target.register_to_config(**loaded.config)
            target.load_state_dict(loaded.state_dict())
            del loaded

    fsdp = accelerator.distributed_type == DistributedType.FSDP
    if fsdp and (args.use_ema or args.save_images_steps):
        raise ValueError(
            "--use_ema and --save_images_steps are not supported under FSDP (training/accelerate_configs/fsdp.yaml); "
            "sample the saved pipeline with `diffusers-smd sample` instead"
        )
    if not fsdp:
        accelerator.register_save_state_pre_hook(save_model_hook)
        accelerator.register_load_state_pre_hook(load_model_hook)

    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )
    train_dataloader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.train_batch_size,
        shuffle=True,
        num_workers=args.dataloader_num_workers,
        # Its own generator: creating an iterator must not consume the global RNG (exact resume).
        generator=torch.Generator().manual_seed(seed),
    )
    num_update_steps_per_epoch = math.ceil(
        math.ceil(len(dataset) / (args.train_batch_size * accelerator.num_processes))
        / args.gradient_accumulation_steps
    )
    max_train_steps = args.max_train_steps
    if max_train_steps is None:
        max_train_steps = args.num_epochs * num_update_steps_per_epoch
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, lr_scheduler
    )
    if ema_model is not None:
        ema_model.to(accelerator.device)
    # The sampler took its data seed from torch.initial_seed() == seed; now give each process its own noise.
    set_seed(seed, device_specific=True)
    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    num_epochs = math.ceil(max_train_steps / num_update_steps_per_epoch) if max_train_steps else 0

    if accelerator.is_main_process:
        accelerator.init_trackers(
            os.path.basename(os.path.normpath(args.output_dir)) or "train_smd", config=_tracker_config(args)
        )

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(
        "***** Running training: %d examples, %d epochs, batch %d per device (%d total), %d optimisation steps *****",
        len(dataset),
        num_epochs,
        args.train_batch_size,
        total_batch_size,
        max_train_steps,
    )

    global_step = 0
    first_epoch = 0
    resume_step = 0
    if args.resume_from_checkpoint is not None and resume_path is None:
        accelerator.print("Checkpoint 'latest' does not exist. Starting a new training run.")
    if resume_path is not None:
        accelerator.print(f"Resuming from checkpoint {resume_path}")
        accelerator.load_state(resume_path)
        global_step = int(os.path.basename(os.path.normpath(resume_path)).split("-")[1])
        resume_global_step = global_step * args.gradient_accumulation_steps
        first_epoch = global_step // num_update_steps_per_epoch
        resume_step = resume_global_step % (num_update_steps_per_epoch * args.gradient_accumulation_steps)

    unwrapped = accelerator.unwrap_model(model)
    progress_bar = tqdm(
        total=max_train_steps,
        initial=global_step,
        disable=not accelerator.is_local_main_process,
        desc="Steps",
    )
    last_loss = None
    losses_since_log: list[float] = []

    def sample_and_log(tag: str) -> None:
        if ema_model is not None:
            ema_model.store(unwrapped.parameters())
            ema_model.copy_to(unwrapped.parameters())
        grid, array = sample_grid(
            unwrapped, noise_scheduler, args.eval_batch_size, args.ddpm_num_inference_steps
        )
        if ema_model is not None:
            ema_model.restore(unwrapped.parameters())
        samples_dir = os.path.join(args.output_dir, "samples")
        os.makedirs(samples_dir, exist_ok=True)
        grid.save(os.path.join(samples_dir, f"{tag}.png"))
        if args.logger == "tensorboard":
            accelerator.get_tracker("tensorboard", unwrap=True).add_images(
                "samples", array.transpose(0, 3, 1, 2), global_step
            )

    for epoch in range(first_epoch, num_epochs):
        model.train()
        train_dataloader.set_epoch(epoch)
        dataset.set_epoch(epoch)
        batches = train_dataloader
        if resume_path is not None and epoch == first_epoch and resume_step > 0:
            batches = accelerator.skip_first_batches(train_dataloader, resume_step)
        progress_bar.set_description(f"Epoch {epoch}")
        for batch in batches:
            with accelerator.accumulate(model):
                per_example_loss = objective(model, noise_scheduler, batch["input"])
                loss = per_example_loss.mean()
                mean_loss = accelerator.reduce(loss.detach().clone(), reduction="mean")
                if not torch.isfinite(mean_loss):
                    accelerator.end_training()
                    raise NonFiniteLossError(
                        _non_finite_message(
                            f"the loss became {mean_loss.item()}", global_step + 1, epoch, args
                        )
                    )
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            losses_since_log.append(mean_loss.item())
            if not accelerator.sync_gradients:
                continue
            if ema_model is not None:
                ema_model.step(model.parameters())
            global_step += 1
            progress_bar.update(1)
            last_loss = sum(losses_since_log) / len(losses_since_log)
            losses_since_log = []
            logs = {"loss": last_loss, "lr": lr_scheduler.get_last_lr()[0], "step": global_step}
            if ema_model is not None:
                logs["ema_decay"] = ema_model.cur_decay_value
            progress_bar.set_postfix(loss=f"{last_loss:.4f}")
            accelerator.log(logs, step=global_step)
            if global_step % args.checkpointing_steps == 0:
                if not all(torch.isfinite(p).all() for p in model.parameters()):
                    accelerator.end_training()
                    raise NonFiniteLossError(
                        _non_finite_message("the weights are no longer finite", global_step, epoch, args)
                    )
                path = save_checkpoint(
                    accelerator, args.output_dir, global_step, args.checkpoints_total_limit, {"seed": seed}
                )
                logger.info("Saved state to %s", path)
            if (
                args.save_images_steps
                and global_step % args.save_images_steps == 0
                and accelerator.is_main_process
                and not fsdp
            ):
                sample_and_log(f"step-{global_step}")
            if global_step >= max_train_steps:
                break
        if accelerator.is_main_process:
            last_epoch = epoch == num_epochs - 1 or global_step >= max_train_steps
            if (epoch + 1) % args.save_images_epochs == 0 and not last_epoch and not fsdp:
                sample_and_log(f"epoch-{epoch}")
            if (epoch + 1) % args.save_model_epochs == 0 and not last_epoch and not fsdp:
                _save_final(
                    accelerator, unwrapped, ema_model, noise_scheduler, args, global_step, sample=False
                )
        if global_step >= max_train_steps:
            break

    progress_bar.close()
    accelerator.wait_for_everyone()
    if fsdp:
        # Sharded parameters: gather a full state dict (every process takes part) into a plain copy.
        full_state = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            unwrapped = type(unwrapped).from_config(unwrapped.config)
            unwrapped.load_state_dict(full_state)
    summary = None
    if accelerator.is_main_process:
        _save_final(accelerator, unwrapped, ema_model, noise_scheduler, args, global_step, sample=not fsdp)
        summary = {
            "global_step": global_step,
            "objective": args.objective,
            "etsdm": {
                "enabled": bool(args.etsdm),
                "threshold": getattr(noise_scheduler.config, "etsdm_threshold", None),
                "intervals": getattr(noise_scheduler.config, "etsdm_intervals", None),
            },
            "dataset": dataset.description,
            "resolution": setup.resolution,
            "num_channels": setup.num_channels,
            "parameter_counts": _parameter_counts(unwrapped),
            "final_loss": last_loss,
            "wall_clock_seconds": round(time.time() - started, 3),
            "base_model": setup.base_model,
            "num_processes": accelerator.num_processes,
            "total_batch_size": total_batch_size,
            "use_ema": bool(args.use_ema),
            "seed": seed,
            "resumed_from": os.path.basename(resume_path) if resume_path else None,
            "model_class": type(unwrapped).__name__,
            "noise_scheduler": type(noise_scheduler).__name__,
        }
        _write_json(
            os.path.join(args.output_dir, "training_args.json"), {**args_to_json_dict(args), "seed": seed}
        )
        _write_json(os.path.join(args.output_dir, "run_summary.json"), summary)
        if args.push_to_hub:
            from .hub import publish

            publish(args.output_dir, args.hub_model_id, private=args.hub_private_repo)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _non_finite_message(what: str, step: int, epoch: int, args) -> str:
    kept = list_checkpoints(args.output_dir)
    advice = f"Lower --learning_rate (now {args.learning_rate})"
    if args.mixed_precision in ("fp16", "bf16"):
        advice += f" or use --mixed_precision no (now {args.mixed_precision})"
    return (
        f"{what} at step {step} (epoch {epoch}); training stopped without saving anything of this step. "
        f"The last good checkpoint is {kept[-1] if kept else 'none (no checkpoint was written yet)'}. "
        f"{advice}, then resume with --resume_from_checkpoint latest."
    )


def _save_final(accelerator, unwrapped, ema_model, noise_scheduler, args, step: int, sample: bool) -> None:
    """Save the SMDPipeline (EMA weights when EMA is on) and, if asked, its sample grid."""
    if ema_model is not None:
        ema_model.store(unwrapped.parameters())
        ema_model.copy_to(unwrapped.parameters())
    try:
        _save_pipeline(unwrapped, noise_scheduler, args.output_dir)
        if sample:
            grid, array = sample_grid(
                unwrapped, noise_scheduler, args.eval_batch_size, args.ddpm_num_inference_steps
            )
            grid.save(os.path.join(args.output_dir, "sample_grid.png"))
            if args.logger == "tensorboard":
                accelerator.get_tracker("tensorboard", unwrap=True).add_images(
                    "samples", array.transpose(0, 3, 1, 2), step
                )
    finally:
        if ema_model is not None:
            ema_model.restore(unwrapped.parameters())


if (
    __name__ == "__main__"
):  # `accelerate launch -m diffusers_smd.training ...` (used by `diffusers-smd train`)
    main(parse_args())
