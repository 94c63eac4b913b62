"""Tiny models and folders shared by the pipeline tests."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, UNet2DModel

NUM_TRAIN_TIMESTEPS = 100


def tiny_unet(num_class_embeds: int | None = None, seed: int = 0) -> UNet2DModel:
    """A randomly initialised 1-channel 8x8 UNet2DModel with block_out_channels (8, 16)."""
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=num_class_embeds,
    )
    # Random init leaves the output convolution at zero-ish scale; widen it so outputs depend on weights.
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return unet.eval()


def ddpm_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
