"""What changes between training tasks, as one small interface the engine calls.

The engine (:mod:`diffusers_smd.training.engine`) owns the loop: the objective call, backward, clipping,
optimiser, learning-rate schedule, EMA, checkpoints, logging, sample grids and the run summary. A task owns
everything that differs between, say, unconditional pixel-space training and latent text-to-image
fine-tuning:

* :meth:`TrainingTask.setup`: build or load the network (SMD-wrapped when the objective needs it), its
  noise scheduler and the training data set;
* :meth:`TrainingTask.batch_inputs`: turn a data-loader batch into ``(clean sample, conditioning)``, the
  two things every objective takes (pixels and nothing; or VAE latents and text embeddings);
* :meth:`TrainingTask.save_final` / :meth:`TrainingTask.sample_images`: the saved output and the sample
  grids (or validation images; :attr:`TrainingTask.sample_tag` and :meth:`TrainingTask.sample_captions` say how
  they are logged);
* :meth:`TrainingTask.save_model` / :meth:`TrainingTask.load_model`: how the trained model is stored in
  a checkpoint (the default is diffusers' ``save_pretrained`` into ``unet/``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

__all__ = ["TaskSetup", "TrainingTask", "check_denoiser_config"]


def check_denoiser_config(config: Any, flag: str, purpose: str) -> None:
    """Refuse, naming ``flag``, a UNet config no training task here supports: a learned-variance output
    (out_channels != in_channels) or a class-conditional embedding. ``purpose`` says what the task trains."""
    in_channels = config.get("in_channels")
    if config.get("out_channels", in_channels) != in_channels:
        raise ValueError(
            f"{flag}: incompatible model: the UNet's out_channels {config.get('out_channels')} != in_channels "
            f"{in_channels} (learned-variance outputs are not supported)"
        )
    if config.get("num_class_embeds") is not None or config.get("class_embed_type") is not None:
        raise ValueError(f"{flag}: incompatible model: the UNet is class-conditional; {purpose}")


@dataclass
class TaskSetup:
    """What :meth:`TrainingTask.setup` built: the network, its noise schedule, the data and facts about them."""

    model: torch.nn.Module
    noise_scheduler: Any
    dataset: torch.utils.data.Dataset
    dataset_name: str
    dataset_kind: str
    base_model: str | None = None
    resolution: int | None = None
    num_channels: int | None = None
    #: The parameters the optimiser updates (default: all of ``model``'s); LoRA trains fewer.
    trainable_parameters: list[torch.nn.Parameter] | None = None
    #: The optimiser's learning rate when the task scales it (``--scale_lr``); None: ``config.learning_rate``.
    learning_rate: float | None = None
    extra_facts: dict[str, Any] = field(default_factory=dict)

    def parameters_to_train(self) -> list[torch.nn.Parameter]:
        if self.trainable_parameters is not None:
            return list(self.trainable_parameters)
        return [p for p in self.model.parameters() if p.requires_grad]


class TrainingTask:
    """Base class of training tasks; subclasses implement :meth:`setup` and :meth:`save_final`."""

    #: Task name recorded in the run summary (a Hub pipeline tag where one exists).
    name: ClassVar[str] = "training"
    #: The configuration class whose flags this task's script takes.
    config_class: ClassVar[type]
    #: The name sample images are logged under (TensorBoard image tag, wandb key).
    sample_tag: ClassVar[str] = "samples"

    def __init__(self, config: Any):
        self.config = config
        #: The run's seed; the engine sets it before :meth:`setup` (data augmentation uses it).
        self.seed = 0

    def check(self) -> None:
        """Checks that need files but no model and no data (run in every process before any work)."""

    def setup(self, accelerator) -> TaskSetup:
        raise NotImplementedError

    def batch_inputs(self, batch: Any) -> tuple[torch.Tensor, dict | None]:
        """``(clean sample, conditioning)`` of a data-loader batch; conditioning is passed to the model."""
        return batch["input"], None

    def save_final(self, output_dir: str, model: torch.nn.Module, noise_scheduler: Any) -> None:
        raise NotImplementedError

    def sample_images(
        self, model: torch.nn.Module, noise_scheduler: Any, num_images: int, seed: int = 0
    ) -> np.ndarray | None:
        """uint8 NHWC sample images for the training grids, or None when the task has no images."""
        return None

    def sample_captions(self) -> list[str] | None:
        """One caption per image of :meth:`sample_images` for the loggers that show captions (wandb), or None."""
        return None

    def save_model(self, model: torch.nn.Module, folder: str) -> None:
        """Store the trained model inside a checkpoint folder (accelerate's save hook)."""
        model.save_pretrained(os.path.join(folder, "unet"))

    def load_model(self, model: torch.nn.Module, folder: str) -> None:
        """Load what :meth:`save_model` stored into ``model`` (accelerate's load hook)."""
        loaded = type(model).from_pretrained(folder, subfolder="unet")
        model.register_to_config(**loaded.config)
        model.load_state_dict(loaded.state_dict())
