"""The configuration of text-to-image fine-tuning: the flags of ``training/train_text_to_image_smd.py``.

:class:`TextToImageTrainingConfig` adds to the shared :class:`~diffusers_smd.training.config.ImageDataConfig` the data,
model, LoRA and validation settings of diffusers' ``examples/text_to_image/train_text_to_image.py`` and
``train_text_to_image_lora.py``, with their names (``--caption_column``, ``--proportion_empty_prompts``,
``--validation_prompts``, ``--scale_lr``, ``--gradient_checkpointing``, ``--rank``, ...) and their defaults
where the shared defaults differ (AdamW beta1 0.9 and weight decay 1e-2, a constant learning rate).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..losses import PREDICTION_TYPES
from .arguments import option
from .config import DATA, LR_SCHEDULERS, MODEL, NOISE, OPTIMISATION, OUTPUT, ImageDataConfig

__all__ = ["LORA", "TextToImageTrainingConfig"]

LORA = "LoRA (peft)"
VALIDATION = "validation images"


@dataclass
class TextToImageTrainingConfig(ImageDataConfig):
    """Fine-tune a Stable Diffusion 1.x / 2.x or SDXL model with SMD and / or E-TSDM, in full or with LoRA.

    Flags follow diffusers' examples/text_to_image/train_text_to_image.py (and --rank of
    train_text_to_image_lora.py). The VAE and text encoders stay frozen; the UNet is fine-tuned.
    """

    # --- data -------------------------------------------------------------------------------------------
    dataset_name: str | None = option(
        None,
        "A Hub data set with an image and a caption column (e.g. lambdalabs/naruto-blip-captions), or a local "
        "data set folder (parquet, csv, json or arrow files).",
        group=DATA,
    )
    train_data_dir: str | None = option(
        None,
        "A folder of images with a metadata.jsonl giving each image's caption, one JSON line per image: "
        '{"file_name": "0001.png", "text": "a caption"} (datasets\' imagefolder).',
        group=DATA,
    )
    image_column: str | None = option(
        None, "The data set column holding images (default: detected, e.g. 'image').", group=DATA
    )
    caption_column: str = option(
        "text",
        "The data set column holding captions (strings, or lists of strings to draw from).",
        group=DATA,
    )
    resolution: int | None = option(
        None,
        "Training image size in pixels (square); a multiple of the VAE's and the UNet's downsampling factors. "
        "Default: the model's own (unet sample_size x VAE scale factor: 512 for SD 1.5, 1024 for SDXL).",
        group=DATA,
    )
    proportion_empty_prompts: float = option(
        0.0,
        "Proportion of captions replaced by the empty prompt, so the model also learns the unconditional "
        "prediction classifier-free guidance needs (e.g. 0.1). Drawn per example from the run's seed.",
        group=DATA,
    )

    # --- model ------------------------------------------------------------------------------------------
    pretrained_model_name_or_path: str | None = option(
        None,
        "Required. The Stable Diffusion 1.x / 2.x or SDXL pipeline to fine-tune: a Hub repo id (e.g. "
        "stable-diffusion-v1-5/stable-diffusion-v1-5) or a folder. With --objective smd / smd-mixture its UNet "
        "is wrapped with zero-initialised SMD modules, so step 0 reproduces the pretrained model.",
        group=MODEL,
    )
    variant: str | None = option(
        None, "Variant of the pretrained weights to load, e.g. fp16.", group=MODEL, resume="free"
    )
    gradient_checkpointing: bool = option(
        False,
        "Recompute activations in the backward pass (less memory, about 20-30% slower; same gradients).",
        group=MODEL,
        resume="free",
    )

    # --- LoRA -------------------------------------------------------------------------------------------
    lora: bool = option(
        False,
        "Train LoRA adapters (peft) on the UNet's attention projections instead of the whole UNet, as "
        "train_text_to_image_lora.py does; the SMD modules (SMD objectives) are trained in full next to them.",
        group=LORA,
    )
    rank: int = option(
        4, "The rank of the LoRA update matrices (with --lora); lora_alpha equals it.", group=LORA
    )

    # --- noise schedule ---------------------------------------------------------------------------------
    prediction_type: str | None = option(
        None,
        "What the UNet learns to predict; default: the pretrained scheduler's (epsilon for SD 1.5, v_prediction "
        "for SD 2.x 768). The saved pipeline's scheduler gets the same value.",
        group=NOISE,
        choices=PREDICTION_TYPES,
    )

    # --- validation -------------------------------------------------------------------------------------
    validation_prompts: tuple[str, ...] | None = option(
        None,
        "Prompts of the validation images, one image each, drawn through the pipeline seeded with --seed "
        "every --save_images_epochs epochs and at the end (sample_grid.png), and logged.",
        group=VALIDATION,
        resume="free",
        metavar="PROMPT",
    )
    validation_num_inference_steps: int = option(
        20,
        "Denoising steps of the validation images (diffusers' script uses 20).",
        group=VALIDATION,
        resume="free",
    )
    save_images_epochs: int = option(
        5, "Draw the validation images every N epochs (needs --validation_prompts).", group=VALIDATION,
        resume="free",
    )  # fmt: skip

    # --- defaults of train_text_to_image.py where the shared ones differ ---------------------------------
    output_dir: str = option(
        "sd-model-finetuned",
        "Where the pipeline (or LoRA weights), checkpoints and logs go.",
        group=OUTPUT,
        resume="free",
    )
    lr_scheduler: str = option(
        "constant", "Learning rate schedule.", group=OPTIMISATION, choices=LR_SCHEDULERS
    )
    adam_beta1: float = option(0.9, "AdamW beta1.", group=OPTIMISATION)
    adam_weight_decay: float = option(1e-2, "AdamW weight decay.", group=OPTIMISATION)
    scale_lr: bool = option(
        False,
        "Scale --learning_rate by the number of processes, --gradient_accumulation_steps and --train_batch_size.",
        group=OPTIMISATION,
        resume="free",
    )

    def validate(self) -> None:
        super().validate()
        self._check_positive("rank", "validation_num_inference_steps")
        if self.pretrained_model_name_or_path is None:
            raise ValueError(
                "--pretrained_model_name_or_path is required: the Stable Diffusion 1.x / 2.x or SDXL pipeline to "
                "fine-tune (a Hub repo id such as stable-diffusion-v1-5/stable-diffusion-v1-5, or a folder)"
            )
        if not 0 <= self.proportion_empty_prompts <= 1:
            raise ValueError(
                f"--proportion_empty_prompts must be in [0, 1], got {self.proportion_empty_prompts}"
            )
        if not self.lora and self.rank != type(self).__dataclass_fields__["rank"].default:
            raise ValueError("--rank sets the LoRA rank and needs --lora")
        if self.lora and self.use_ema:
            raise ValueError(
                "--use_ema is not supported with --lora (as in diffusers' train_text_to_image_lora.py): the "
                "adapters are small and trained briefly; leave --use_ema out, or fine-tune in full"
            )
        if self.lora and self.push_to_hub:
            raise ValueError(
                "--push_to_hub publishes pipeline folders; a --lora run writes LoRA weights (no model_index.json). "
                "Upload its --output_dir with `hf upload` after training, or fine-tune in full"
            )
