"""Pieces the ``diffusers-smd`` subcommands share: the error type, sampling flags, loading a pipeline."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..atomic import read_json

__all__ = [
    "CLIError",
    "add_sampling_flags",
    "check_new_file",
    "load_pipeline",
    "positive_int",
    "resolve_device",
]


class CLIError(Exception):
    """A user-facing error of the command line (printed as one line, without a traceback)."""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_sampling_flags(parser: argparse.ArgumentParser, default_steps: int, default_images: int) -> None:
    """The flags of every command that generates images (``sample``, ``eval``)."""
    from ..sampling import scheduler_choices

    parser.add_argument(
        "pipeline", help="A trained pipeline folder (from `diffusers-smd train`) or a Hub repo id."
    )
    parser.add_argument(
        "--scheduler",
        default="auto",
        choices=scheduler_choices(),
        help="Sampler. 'auto': DPM-Solver++. A model trained with E-TSDM is always sampled with the E-TSDM variant "
        "of the chosen sampler (its network is conditioned on the shared early timesteps). When the model's "
        "scheduler clips x_0 to [-1, 1] (clip_sample, the DDPM default), multistep solvers clip too.",
    )
    parser.add_argument(
        "--num_inference_steps", type=positive_int, default=default_steps, help="Denoising steps."
    )
    parser.add_argument(
        "--num_images", type=positive_int, default=default_images, help="Number of images to generate."
    )
    parser.add_argument(
        "--batch_size", type=positive_int, default=256, help="Images generated per forward batch."
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="Seed of the sampling noise (same seed, same images)."
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu).")


def resolve_device(device: str | None) -> str:
    """``device`` checked before any work (``--device``), or cuda when available, else cpu."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise CLIError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from error
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {device!r}: CUDA is not available on this machine; use --device cpu")
    return device


def check_new_file(path: str, flag: str, overwrite: bool = False) -> None:
    """Refuse, before any work, an output file that exists (unless ``overwrite``) or whose folder does not."""
    if os.path.isdir(path):
        raise CLIError(f"{flag} {path!r} is a folder; give a file name")
    if os.path.exists(path) and not overwrite:
        raise CLIError(f"{flag} {path!r} exists; pass --overwrite to replace it or choose another file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CLIError(f"{flag} {path!r}: the folder {folder} does not exist")


def load_pipeline(name_or_path: str, device: str) -> Any:
    """An SMDPipeline (or any pipeline saved by this package) from a folder or Hub repo id, on ``device``."""
    from ..pipelines import SMDPipeline

    path = os.path.expanduser(name_or_path)
    if name_or_path.startswith(("/", ".", "~")) and not os.path.isdir(path):
        raise CLIError(f"pipeline {name_or_path!r}: no such folder")
    if os.path.isdir(path):
        index = os.path.join(path, "model_index.json")
        if not os.path.isfile(index):
            raise CLIError(
                f"pipeline {name_or_path!r}: the folder has no model_index.json (not a saved pipeline)"
            )
        read_json(index)  # a corrupt file is named here, not as a bare JSON error from diffusers
    try:
        pipeline = SMDPipeline.from_pretrained(path)
    except (OSError, ValueError) as error:
        hint = ""
        if not os.path.isdir(path) and os.environ.get("HF_HUB_OFFLINE"):
            hint = " (HF_HUB_OFFLINE is set: a Hub repo id loads only from the local cache)"
        raise CLIError(f"pipeline {name_or_path!r} could not be loaded{hint}: {error}") from error
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline
