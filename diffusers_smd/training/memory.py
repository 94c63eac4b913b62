"""The in-memory task: train a model you built on a tensor you hold, with the package's one training loop.

For benchmarks and experiments (toy mixtures, exact-score studies, step-time measurements) that need the
engine's optimiser, schedule, EMA, checkpoints and summary but no data files: every row of ``data`` is one
training example. The output folder is a pipeline (``pipeline_class``) or, without one, ``unet/`` and
``scheduler/`` folders written by ``save_pretrained``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .task import TaskSetup, TrainingTask

__all__ = ["InMemoryTask", "TensorRows"]


class TensorRows(torch.utils.data.Dataset):
    """``{"input": data[i], **{name: tensor[i] for each conditioning tensor}}`` for each row."""

    def __init__(self, data: torch.Tensor, conditioning: dict[str, torch.Tensor] | None = None):
        self.data, self.conditioning = data, dict(conditioning or {})

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "input": self.data[index],
            **{name: values[index] for name, values in self.conditioning.items()},
        }


class InMemoryTask(TrainingTask):
    """A model, its noise scheduler and a tensor of training examples, given directly in Python.

    The model is trained as given: wrap it for an SMD objective yourself (``SMDUNet2DModel.from_unet``, or an
    ``SMDVectorModel``). ``conditioning`` holds extra model inputs with one row per example (for a
    ``UNet2DConditionModel``, ``{"encoder_hidden_states": ...}``). ``pipeline_class`` (e.g.
    :class:`~diffusers_smd.SMDVectorPipeline`) decides the saved output.
    """

    name = "in-memory"

    def __init__(
        self,
        config: Any,
        model: torch.nn.Module,
        noise_scheduler: Any,
        data: torch.Tensor,
        *,
        conditioning: dict[str, torch.Tensor] | None = None,
        dataset_name: str = "tensor",
        pipeline_class: type | None = None,
    ):
        super().__init__(config)
        if (
            not isinstance(data, torch.Tensor)
            or data.ndim < 2
            or not data.is_floating_point()
            or not len(data)
        ):
            raise ValueError("`data` must be a non-empty floating-point tensor (num_examples, ...)")
        for name, values in (conditioning or {}).items():
            if not isinstance(values, torch.Tensor) or len(values) != len(data):
                raise ValueError(
                    f"conditioning[{name!r}] must be a tensor with one row per example of `data`"
                )
        self.model, self.noise_scheduler, self.data = model, noise_scheduler, data
        self.conditioning = dict(conditioning or {})
        self.dataset_name, self.pipeline_class = dataset_name, pipeline_class

    def setup(self, accelerator) -> TaskSetup:
        return TaskSetup(
            model=self.model,
            noise_scheduler=self.noise_scheduler,
            dataset=TensorRows(self.data, self.conditioning),
            dataset_name=self.dataset_name,
            dataset_kind="memory",
        )

    def batch_inputs(self, batch: dict) -> tuple[torch.Tensor, dict | None]:
        """The example rows, and the conditioning rows as model keyword arguments (e.g. encoder_hidden_states)."""
        return batch["input"], {name: batch[name] for name in self.conditioning} or None

    def save_final(self, output_dir: str, model: torch.nn.Module, noise_scheduler: Any) -> None:
        scheduler = type(noise_scheduler).from_config(noise_scheduler.config)
        if self.pipeline_class is not None:
            self.pipeline_class(unet=model, scheduler=scheduler).save_pretrained(output_dir)
            return
        model.save_pretrained(os.path.join(output_dir, "unet"))
        scheduler.save_pretrained(os.path.join(output_dir, "scheduler"))
