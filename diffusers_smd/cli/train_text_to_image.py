"""``diffusers-smd train-text-to-image``: fine-tune Stable Diffusion 1.x / 2.x or SDXL through ``accelerate launch``.

A subcommand of its own (rather than a ``--task`` of ``train``) because its flags are another configuration's
(:class:`~diffusers_smd.training.TextToImageTrainingConfig`, those of diffusers' ``train_text_to_image.py``) and
``--help`` should list exactly them. The launcher flags and logic are ``train``'s (:mod:`.train`): every setting
is checked in this process, then ``python -m diffusers_smd.training.train_text_to_image`` (the installed twin of
``training/train_text_to_image_smd.py``) runs in each training process.
"""

from __future__ import annotations

import argparse

from .train import add_training_parser, launch_training

TRAINING_MODULE = "diffusers_smd.training.train_text_to_image"


def add_parser(commands) -> None:
    from ..training import TextToImageTrainingConfig

    add_training_parser(
        commands,
        "train-text-to-image",
        help="Fine-tune Stable Diffusion 1.x / 2.x or SDXL, in full or with LoRA (flags of "
        "training/train_text_to_image_smd.py).",
        description="Fine-tune a Stable Diffusion 1.x / 2.x or SDXL pipeline with SMD and / or E-TSDM through "
        "`accelerate launch`. Launcher flags come first in this help; every other flag is a training setting, the "
        "same as training/train_text_to_image_smd.py takes. See docs/text-to-image.md.",
        config_class=TextToImageTrainingConfig,
        run=run,
    )


def run(args: argparse.Namespace) -> int:
    from ..training import TextToImageTask

    return launch_training(args, TextToImageTask, TRAINING_MODULE)
