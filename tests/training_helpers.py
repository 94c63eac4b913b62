"""Shared pieces of the training tests: tiny flags and weight comparison."""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file

from diffusers_smd.training import UnconditionalTrainingConfig, parse_config, train


def parse_flags(flags) -> UnconditionalTrainingConfig:
    """The training configuration the script builds from ``flags`` (validated)."""
    return parse_config(UnconditionalTrainingConfig, [str(f) for f in flags])


def train_with_flags(flags) -> dict:
    """Train in this process exactly as ``training/train_smd.py <flags>`` does; return the run summary as a dict."""
    return train(parse_flags(flags)).to_dict()


def tiny_flags(output_dir, *extra: str) -> list[str]:
    """Flags of a tiny, fast run: 8x8 digits, a two-stage UNet with 8/16 channels, 50 diffusion steps."""
    return [
        "--output_dir", str(output_dir),
        "--resolution", "8",
        "--block_out_channels", "8,16",
        "--layers_per_block", "1",
        "--smd_latent_dim", "4",
        "--train_batch_size", "4",
        "--ddpm_num_steps", "50",
        "--ddpm_num_inference_steps", "2",
        "--eval_batch_size", "2",
        "--learning_rate", "1e-3",
        "--lr_warmup_steps", "0",
        "--lr_scheduler", "constant",
        "--seed", "0",
        *extra,
    ]  # fmt: skip


def weights(folder) -> dict[str, torch.Tensor]:
    """The safetensors weights saved in ``folder`` (a model folder with one weights file)."""
    (name,) = [n for n in os.listdir(folder) if n.endswith(".safetensors")]
    return load_file(os.path.join(folder, name))


def max_weight_difference(folder_a, folder_b) -> float:
    a, b = weights(folder_a), weights(folder_b)
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)
