"""Training: the typed configuration, the one training loop (engine), tasks, checkpoints and run summaries.

    from diffusers_smd.training import UnconditionalTrainingConfig, train

    summary = train(UnconditionalTrainingConfig(output_dir="smd-digits", max_train_steps=1000, etsdm=True))

``training/train_smd.py`` and ``diffusers-smd train`` run the same code with the flags generated from the
configuration (:func:`run_script`). Text-to-image fine-tuning (Stable Diffusion 1.x / 2.x, SDXL; in full or with
LoRA) is :class:`TextToImageTask` with :class:`TextToImageTrainingConfig`, run by
``training/train_text_to_image_smd.py`` and ``diffusers-smd train-text-to-image``.
"""

from .arguments import config_to_argv, config_to_dict, parse_config
from .config import TrainingConfig, UnconditionalTrainingConfig
from .engine import NonFiniteLossError, Trainer, train
from .lora import load_lora_fine_tune
from .memory import InMemoryTask
from .script import run_script
from .summary import RunSummary
from .task import TaskSetup, TrainingTask
from .text_to_image import TextToImageTask
from .text_to_image_config import TextToImageTrainingConfig
from .unconditional import UnconditionalImageTask

__all__ = [
    "InMemoryTask",
    "NonFiniteLossError",
    "RunSummary",
    "TaskSetup",
    "TextToImageTask",
    "TextToImageTrainingConfig",
    "Trainer",
    "TrainingConfig",
    "TrainingTask",
    "UnconditionalImageTask",
    "UnconditionalTrainingConfig",
    "config_to_argv",
    "config_to_dict",
    "load_lora_fine_tune",
    "parse_config",
    "run_script",
    "train",
]
