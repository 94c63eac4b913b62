"""The typed training configuration: one schema for flags, validation, checkpoints and run summaries.

:class:`TrainingConfig` holds what every training task shares (the objective, SMD and E-TSDM settings,
optimisation, checkpoints, logging, publishing); :class:`UnconditionalTrainingConfig` adds the data, model
and noise-schedule settings of unconditional pixel-space training, with the flag names of diffusers'
``examples/unconditional_image_generation/train_unconditional.py``. The argparse flags of
``training/train_smd.py`` and ``diffusers-smd train`` are generated from these fields
(:mod:`diffusers_smd.training.arguments`); code refers to settings by field name, never by flag string.

:meth:`TrainingConfig.validate` runs every check that needs no model and no data, before any work starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from ..etsdm import DEFAULT_ETSDM_INTERVALS, ETSDMSettings, resolve_etsdm_settings
from ..losses import OBJECTIVE_NAMES, OBJECTIVES, PREDICTION_TYPES
from .arguments import option

__all__ = [
    "LR_SCHEDULERS",
    "BETA_SCHEDULES",
    "ImageDataConfig",
    "TrainingConfig",
    "UnconditionalTrainingConfig",
]

LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
LOGGERS = ("tensorboard", "wandb")
MIXED_PRECISION = ("no", "fp16", "bf16")

DATA, MODEL, METHOD, NOISE, OPTIMISATION, OUTPUT = (
    "data",
    "model",
    "SMD and E-TSDM",
    "noise schedule",
    "optimisation",
    "output, checkpoints, logging",
)


def _objective_help() -> str:
    return "Training objective: " + "; ".join(
        f"'{name}': {cls.description}" for name, cls in OBJECTIVES.items()
    )


@dataclass
class TrainingConfig:
    """Settings every training task shares: objective, SMD / E-TSDM, optimisation, checkpoints and output."""

    # --- SMD and E-TSDM ---------------------------------------------------------------------------------
    objective: str = option("smd", _objective_help(), group=METHOD, choices=OBJECTIVE_NAMES)
    smd_latent_dim: int = option(32, "Channels of the SMD latent z (the paper uses 100).", group=METHOD)
    smd_hypernet_layers: int = option(2, "Layers K of the SMD hypernetwork f_phi.", group=METHOD)
    smd_identifier_channels: tuple[int, ...] | None = option(
        None,
        "Stage widths of the SMD identifier g_xi (comma-separated); default: about 1/4 of the UNet's first two.",
        group=METHOD,
    )
    smd_mixture_samples: int = option(4, "Mixture samples K of --objective smd-mixture.", group=METHOD)
    smd_mixture_mean_posterior: bool = option(
        False,
        "--objective smd-mixture: score the components against the posterior mean of x_{t-1} instead of a draw "
        "(a deterministic soft minimum with far less gradient noise on fine grids; not the exact bound).",
        group=METHOD,
    )
    etsdm: bool = option(
        False,
        "Early timestep sharing (E-TSDM): condition the network on a shared timestep below --etsdm_threshold.",
        group=METHOD,
    )
    etsdm_threshold: int | None = option(
        None, "E-TSDM threshold t~ in training steps (default: num_train_timesteps // 10).", group=METHOD
    )
    etsdm_intervals: int = option(
        DEFAULT_ETSDM_INTERVALS, "E-TSDM: equal sub-intervals n of [0, t~).", group=METHOD
    )
    snr_gamma: float | None = option(
        None,
        "Min-SNR loss weighting gamma (e.g. 5.0); default: no weighting. Only for objectives that support it.",
        group=METHOD,
    )
    noise_offset: float = option(
        0.0,
        "Offset noise: add noise_offset * N(0, 1) per example and channel to the training noise (e.g. 0.05; "
        "0: off), as diffusers' training examples do.",
        group=METHOD,
    )

    # --- optimisation -----------------------------------------------------------------------------------
    train_batch_size: int = option(16, "Batch size per device.", group=OPTIMISATION)
    num_epochs: int = option(
        100, "Epochs (ignored when --max_train_steps is set).", group=OPTIMISATION, resume="free"
    )
    max_train_steps: int | None = option(
        None, "Total optimisation steps; overrides --num_epochs.", group=OPTIMISATION, resume="free"
    )
    gradient_accumulation_steps: int = option(
        1, "Batches accumulated before each optimisation step.", group=OPTIMISATION
    )
    learning_rate: float = option(
        1e-4, "Initial learning rate (after warmup).", group=OPTIMISATION, resume="free"
    )
    lr_scheduler: str = option("cosine", "Learning rate schedule.", group=OPTIMISATION, choices=LR_SCHEDULERS)
    lr_warmup_steps: int = option(500, "Warmup steps of the learning rate schedule.", group=OPTIMISATION)
    adam_beta1: float = option(0.95, "AdamW beta1.", group=OPTIMISATION)
    adam_beta2: float = option(0.999, "AdamW beta2.", group=OPTIMISATION)
    adam_weight_decay: float = option(1e-6, "AdamW weight decay.", group=OPTIMISATION)
    adam_epsilon: float = option(1e-08, "AdamW epsilon.", group=OPTIMISATION)
    max_grad_norm: float = option(1.0, "Gradient clipping norm.", group=OPTIMISATION)
    use_ema: bool = option(
        False,
        "Keep an exponential moving average of the weights (saved as the final model).",
        group=OPTIMISATION,
    )
    ema_inv_gamma: float = option(1.0, "EMA warmup inverse multiplicative factor.", group=OPTIMISATION)
    ema_power: float = option(3 / 4, "EMA warmup power.", group=OPTIMISATION)
    ema_max_decay: float = option(0.9999, "Maximum EMA decay.", group=OPTIMISATION)
    mixed_precision: str | None = option(
        None,
        "Mixed precision (default: the accelerate config's choice).",
        group=OPTIMISATION,
        choices=MIXED_PRECISION,
    )
    seed: int | None = option(
        None,
        "Seed for a reproducible run (model init, noise, data order); a resumed run keeps its own.",
        group=OPTIMISATION,
        resume="free",
    )

    # --- output, checkpoints, logging -------------------------------------------------------------------
    output_dir: str = option(
        "smd-model", "Where the pipeline, checkpoints and logs go.", group=OUTPUT, resume="free"
    )
    overwrite_output_dir: bool = option(
        False,
        "Allow training into an --output_dir that already holds a model or checkpoints (without resuming).",
        group=OUTPUT,
        resume="free",
    )
    eval_batch_size: int = option(16, "Images per sample grid.", group=OUTPUT, resume="free")
    save_images_epochs: int = option(10, "Sample a grid every N epochs.", group=OUTPUT, resume="free")
    save_images_steps: int | None = option(
        None, "Also sample a grid every N steps.", group=OUTPUT, resume="free"
    )
    save_model_epochs: int = option(
        10, "Save the pipeline to --output_dir every N epochs.", group=OUTPUT, resume="free"
    )
    checkpointing_steps: int = option(
        500, "Save a resumable checkpoint-<step> every N steps.", group=OUTPUT, resume="free"
    )
    checkpoints_total_limit: int | None = option(
        None, "Keep at most this many checkpoints.", group=OUTPUT, resume="free"
    )
    resume_from_checkpoint: str | None = option(
        None,
        "Resume from a checkpoint folder, or 'latest' for the newest complete one in --output_dir "
        "(starts fresh when there is none).",
        group=OUTPUT,
        resume="free",
    )
    logger: str = option(
        "tensorboard",
        "Where loss, learning rate and sample grids are logged.",
        group=OUTPUT,
        choices=LOGGERS,
        resume="free",
    )
    logging_dir: str = option(
        "logs", "TensorBoard log folder, relative to --output_dir.", group=OUTPUT, resume="free"
    )
    push_to_hub: bool = option(
        False, "Publish the final pipeline to the Hub (diffusers_smd.hub).", group=OUTPUT, resume="free"
    )
    hub_model_id: str | None = option(
        None,
        "Hub repo id 'namespace/name' for --push_to_hub (checked before training starts).",
        group=OUTPUT,
        resume="free",
    )
    hub_private_repo: bool = option(False, "Create the Hub repo as private.", group=OUTPUT, resume="free")
    dataloader_num_workers: int = option(
        0, "Data loading worker processes (0: main process).", group=DATA, resume="free"
    )
    local_rank: int = option(
        -1, "Set by distributed launchers; do not pass by hand.", group=OUTPUT, resume="free"
    )

    # ----------------------------------------------------------------------------------------------------
    @property
    def objective_class(self):
        """The objective's class in the registry (:data:`diffusers_smd.losses.OBJECTIVES`)."""
        return OBJECTIVES[self.objective]

    @property
    def uses_smd_model(self) -> bool:
        """Whether the objective trains an SMD model (declared by the objective itself)."""
        return self.objective_class.needs_mixture_model

    def objective_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`diffusers_smd.losses.build_objective` for this run."""
        available = {
            "snr_gamma": self.snr_gamma,
            "num_mixture_samples": self.smd_mixture_samples,
            "posterior_noise": not self.smd_mixture_mean_posterior,
            "noise_offset": self.noise_offset,
        }
        accepted = inspect.signature(self.objective_class).parameters
        return {name: value for name, value in available.items() if name in accepted}

    def smd_config(self) -> dict[str, Any]:
        """Keyword arguments of ``SMDUNet*.from_unet`` for this run."""
        config: dict[str, Any] = {
            "latent_dim": self.smd_latent_dim,
            "num_hypernet_layers": self.smd_hypernet_layers,
        }
        if self.smd_identifier_channels is not None:
            config["identifier_block_out_channels"] = tuple(self.smd_identifier_channels)
        return config

    def etsdm_settings(self, num_train_timesteps: int) -> ETSDMSettings | None:
        """The resolved E-TSDM settings for a schedule of ``num_train_timesteps``, or None when ``--etsdm`` is off.

        The one rule of :mod:`diffusers_smd.etsdm` (:func:`~diffusers_smd.etsdm.resolve_etsdm_settings`: default
        threshold, validation, messages).
        """
        if not self.etsdm:
            return None
        try:
            return resolve_etsdm_settings(self.etsdm_threshold, self.etsdm_intervals, num_train_timesteps)
        except ValueError as error:
            raise ValueError(f"--etsdm_threshold / --etsdm_intervals: {error}") from None

    # ----------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Checks that need no model and no data: types, ranges, flags that go together (ValueError names the flag)."""
        for field in dataclasses.fields(self):
            meta = field.metadata
            value = getattr(self, field.name)
            if meta.get("choices") is not None and value is not None and value not in meta["choices"]:
                raise ValueError(f"--{field.name} must be one of {list(meta['choices'])}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"--{field.name} must be a finite number, got {value!r}")
            if isinstance(value, Integral) and not isinstance(value, bool):
                setattr(self, field.name, int(value))
        self._check_positive(
            "train_batch_size",
            "eval_batch_size",
            "num_epochs",
            "gradient_accumulation_steps",
            "checkpointing_steps",
            "checkpoints_total_limit",
            "save_images_epochs",
            "save_images_steps",
            "save_model_epochs",
            "smd_latent_dim",
            "smd_hypernet_layers",
            "smd_mixture_samples",
            "etsdm_intervals",
        )
        if self.max_train_steps is not None and self.max_train_steps < 0:
            raise ValueError(f"--max_train_steps must be >= 0, got {self.max_train_steps}")
        if not self.learning_rate > 0:
            raise ValueError(f"--learning_rate must be positive, got {self.learning_rate}")
        if self.lr_warmup_steps < 0:
            raise ValueError(f"--lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        if self.noise_offset < 0:
            raise ValueError(f"--noise_offset must be >= 0, got {self.noise_offset}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ValueError(f"--snr_gamma must be positive, got {self.snr_gamma}")
        if self.snr_gamma is not None and not self.objective_class.supports_snr_gamma:
            allowed = [name for name, cls in OBJECTIVES.items() if cls.supports_snr_gamma]
            raise ValueError(
                f"--snr_gamma applies to --objective {' and '.join(allowed)}, not {self.objective}"
            )
        if self.etsdm_threshold is not None and not self.etsdm:
            raise ValueError("--etsdm_threshold needs --etsdm")
        if self.dataloader_num_workers < 0:
            raise ValueError(f"--dataloader_num_workers must be >= 0, got {self.dataloader_num_workers}")
        if not 0 < self.ema_max_decay <= 1:
            raise ValueError(f"--ema_max_decay must be in (0, 1], got {self.ema_max_decay}")
        if os.path.isfile(self.output_dir):
            raise ValueError(f"--output_dir {self.output_dir!r} is a file; give a folder (new or existing)")
        if self.push_to_hub:
            self._check_hub_access()

    def _check_hub_access(self) -> None:
        """--push_to_hub needs a valid repo id, the network and a token: refuse before training, not after."""
        from huggingface_hub import constants, get_token

        from ..hub import check_repo_id

        check_repo_id(self.hub_model_id, name="--hub_model_id")
        if constants.HF_HUB_OFFLINE:
            raise ValueError(
                "--push_to_hub needs the network, but HF_HUB_OFFLINE is set; unset it or publish later"
            )
        if get_token() is None:
            raise ValueError(
                "--push_to_hub needs a Hugging Face token: log in with `hf auth login` or set HF_TOKEN (it is never "
                "printed or saved by this package)"
            )

    def _check_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, Real) or value < 1):
                raise ValueError(f"--{name} must be at least 1, got {value}")


@dataclass
class ImageDataConfig(TrainingConfig):
    """The image-data and pretrained-model settings every image task shares (a task's config refines the help)."""

    # --- data -------------------------------------------------------------------------------------------
    dataset_name: str | None = option(None, "A Hub data set name or a local data set folder.", group=DATA)
    dataset_config_name: str | None = option(
        None, "The config of the Hub data set, if it has several.", group=DATA
    )
    train_data_dir: str | None = option(
        None, "A folder of images (read with datasets' 'imagefolder').", group=DATA
    )
    image_column: str | None = option(
        None, "The data set column holding images (default: detected).", group=DATA
    )
    cache_dir: str | None = option(
        None, "Where downloaded data sets and models are cached.", group=DATA, resume="free"
    )
    resolution: int | None = option(None, "Training image size in pixels (square).", group=DATA)
    max_train_samples: int | None = option(
        None, "For debugging or quicker runs: train on the first N examples of the data set only.", group=DATA
    )
    center_crop: bool = option(False, "Crop the centre square (default: a random square).", group=DATA)
    random_flip: bool = option(False, "Flip training images left-right with probability 1/2.", group=DATA)

    # --- model ------------------------------------------------------------------------------------------
    pretrained_model_name_or_path: str | None = option(
        None, "The pretrained model to fine-tune: a Hub repo id or a folder.", group=MODEL
    )
    revision: str | None = option(None, "Revision of the pretrained model on the Hub.", group=MODEL)

    def validate(self) -> None:
        super().validate()
        self._check_positive("resolution", "max_train_samples")
        if self.dataset_name is not None and self.train_data_dir is not None:
            raise ValueError("give either --dataset_name or --train_data_dir, not both")
        if self.train_data_dir is not None and not os.path.isdir(self.train_data_dir):
            raise ValueError(f"--train_data_dir {self.train_data_dir!r} is not an existing folder")


@dataclass
class UnconditionalTrainingConfig(ImageDataConfig):
    """Train or fine-tune an unconditional SMD / E-TSDM diffusion model with accelerate.

    Flags follow diffusers' train_unconditional.py. With no data flags it trains on the built-in digits,
    so `--output_dir DIR` alone is a complete command.
    """

    # --- data -------------------------------------------------------------------------------------------
    dataset_name: str | None = option(
        None,
        "A Hub data set name (e.g. huggan/flowers-102-categories), a local data set folder, or 'digits' for the "
        "built-in scikit-learn digits. Default: 'digits' unless --train_data_dir is given.",
        group=DATA,
    )
    train_data_dir: str | None = option(
        None,
        "A folder of images (read with datasets' 'imagefolder'). Grey, RGB, RGBA (composited on white) and "
        "mixed sizes are accepted.",
        group=DATA,
    )
    image_column: str | None = option(
        None, "The data set column holding images (default: detected).", group=DATA
    )
    resolution: int | None = option(
        None,
        "Training image size in pixels (square). Must be divisible by the UNet's downsampling factor. "
        "Default: the pretrained / configured model's sample_size, else 16.",
        group=DATA,
    )
    num_channels: int | None = option(
        None,
        "Image channels (1 grey, 3 RGB). Default: the model's in_channels, else 1 for grey data, else 3.",
        group=DATA,
        choices=(1, 3),
    )

    # --- model ------------------------------------------------------------------------------------------
    pretrained_model_name_or_path: str | None = option(
        None,
        "Fine-tune from a diffusers UNet2DModel folder, a pipeline folder (with unet/ and scheduler/) or a Hub "
        "repo id. With --objective smd/smd-mixture the UNet is wrapped with zero-initialised SMD modules, so step 0 "
        "reproduces the pretrained model. A pipeline's noise schedule replaces the --ddpm_* flags.",
        group=MODEL,
    )
    model_config_name_or_path: str | None = option(
        None,
        "A UNet2DModel config (folder or config.json) to train from scratch; default: a small UNet sized by "
        "--block_out_channels and --layers_per_block.",
        group=MODEL,
    )
    block_out_channels: tuple[int, ...] = option(
        (32, 64, 128),
        "Channel widths of the default from-scratch UNet, one per resolution stage (comma-separated).",
        group=MODEL,
    )
    layers_per_block: int = option(2, "ResNet layers per stage of the default UNet.", group=MODEL)

    # --- noise schedule ---------------------------------------------------------------------------------
    prediction_type: str = option(
        "epsilon",
        "What the network predicts: the noise, the clean image, or v.",
        group=NOISE,
        choices=PREDICTION_TYPES,
    )
    ddpm_num_steps: int = option(1000, "Training diffusion steps T.", group=NOISE)
    ddpm_num_inference_steps: int | None = option(
        None,
        "DDPM steps when sampling the grids during and after training (default: every training "
        "timestep of the model, i.e. --ddpm_num_steps; at most that many).",
        group=NOISE,
        resume="free",
    )
    ddpm_beta_schedule: str = option(
        "linear", "Beta schedule of the DDPM noise scheduler.", group=NOISE, choices=BETA_SCHEDULES
    )

    def validate(self) -> None:
        super().validate()
        self._check_positive(
            "resolution",
            "layers_per_block",
            "ddpm_num_steps",
            "ddpm_num_inference_steps",
            "max_train_samples",
        )
        if self.dataset_name is not None and self.train_data_dir is not None:
            raise ValueError("give either --dataset_name or --train_data_dir, not both")
        if self.train_data_dir is not None and not os.path.isdir(self.train_data_dir):
            raise ValueError(f"--train_data_dir {self.train_data_dir!r} is not an existing folder")
        if self.pretrained_model_name_or_path is not None and self.model_config_name_or_path is not None:
            raise ValueError(
                "give either --pretrained_model_name_or_path or --model_config_name_or_path, not both"
            )
        if self.pretrained_model_name_or_path is None and self.etsdm:
            self.etsdm_settings(self.ddpm_num_steps)  # the schedule is known: check the rule now
