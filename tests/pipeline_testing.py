"""Tiny models and folders shared by the pipeline tests."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.models.unets.unet_2d import UNet2DOutput

from diffusers_smd import SMDUNet2DModel

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
    return perturb(unet, seed)  # diffusers zero-initialises some layers; make every weight matter


def ddpm_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Add small seeded noise to every parameter (zero-initialised layers then matter)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return model.eval()


def smd_unet(num_class_embeds: int | None = None, seed: int = 0) -> SMDUNet2DModel:
    """A tiny SMDUNet2DModel around :func:`tiny_unet`, perturbed so the mixture modules change its output."""
    model = SMDUNet2DModel.from_unet(tiny_unet(num_class_embeds, seed), latent_dim=4, num_hypernet_layers=1)
    return perturb(model, seed + 1)


def mixture_unet(seed: int = 0) -> torch.nn.Module:
    """A tiny denoiser following the SMD forward convention (``mixture_noise=`` / ``generator=``)."""
    unet = tiny_unet(seed=seed)
    model = MixtureNoiseUNet.from_config(unet.config)
    model.load_state_dict(unet.state_dict())
    return model.eval()


class MixtureNoiseUNet(UNet2DModel):
    """Test double for the SMD forward convention: the UNet's output plus 0.1 * eta.

    eta is ``mixture_noise`` when given, else drawn from ``generator``; so the output reveals exactly
    which eta the pipeline supplied.
    """

    def forward(
        self, sample, timestep, class_labels=None, return_dict=True, *, mixture_noise=None, generator=None
    ):
        if mixture_noise is None:
            mixture_noise = torch.randn(sample.shape, generator=generator, dtype=sample.dtype)
        output = super().forward(sample, timestep, class_labels).sample + 0.1 * mixture_noise
        return UNet2DOutput(sample=output) if return_dict else (output,)
