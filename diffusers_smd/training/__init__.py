"""Training: the typed configuration, the one training loop (engine), tasks, checkpoints and run summaries.

    from diffusers_smd.training import UnconditionalTrainingConfig, train

    summary = train(UnconditionalTrainingConfig(output_dir="smd-digits", max_train_steps=1000, etsdm=True))

``training/train_smd.py`` and ``diffusers-smd train`` run the same code with the flags generated from the
configuration (:func:`run_script`).
"""

from .arguments import config_to_argv, config_to_dict, parse_config
from .config import TrainingConfig, UnconditionalTrainingConfig
from .engine import NonFiniteLossError, Trainer, train
from .memory import InMemoryTask
from .script import run_script
from .summary import RunSummary
from .task import TaskSetup, TrainingTask
from .unconditional import UnconditionalImageTask

__all__ = [
    "InMemoryTask",
    "NonFiniteLossError",
    "RunSummary",
    "TaskSetup",
    "Trainer",
    "TrainingConfig",
    "TrainingTask",
    "UnconditionalImageTask",
    "UnconditionalTrainingConfig",
    "config_to_argv",
    "config_to_dict",
    "parse_config",
    "run_script",
    "train",
]
