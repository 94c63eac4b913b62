"""The SMD identifier g_xi: a small diffusers UNet that maps (x_t, eta, t) to a per-pixel latent map."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from diffusers import UNet2DModel
from torch import nn

__all__ = ["MixtureIdentifier", "default_identifier_channels"]


def default_identifier_channels(denoiser_block_out_channels: Sequence[int]) -> tuple[int, int]:
    """Two resolution stages at about 1/4 of the denoiser's width: ``(c_0 // 4, c_1 // 4)``.

    A one-stage denoiser gets ``(c_0 // 4, c_0 // 2)``. Widths never drop below 1.
    """
    first = denoiser_block_out_channels[0]
    second = denoiser_block_out_channels[1] if len(denoiser_block_out_channels) > 1 else 2 * first
    return max(1, first // 4), max(1, second // 4)


def largest_group_count(channels: Sequence[int], limit: int = 32) -> int:
    """The largest GroupNorm group count <= ``limit`` that divides every entry of ``channels``."""
    common = math.gcd(*channels)
    return max(g for g in range(1, min(limit, common) + 1) if common % g == 0)


class MixtureIdentifier(nn.Module):
    """The identifier g_xi of SMD: ``z = g_xi(x_t, eta, t)``, a map of ``latent_dim`` channels at input resolution.

    A diffusers :class:`~diffusers.UNet2DModel` over ``concat[x_t, eta]`` (channels), conditioned on the
    timestep, without attention. ``eta`` has the shape of ``x_t``; the identifier never sees x_0.
    """

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        block_out_channels: Sequence[int] = (32, 64),
        layers_per_block: int = 1,
        norm_num_groups: int | None = None,
    ):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("latent_dim", latent_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
        block_out_channels = tuple(block_out_channels)
        if not block_out_channels or any(not isinstance(c, int) or c < 1 for c in block_out_channels):
            raise ValueError(
                f"`identifier_block_out_channels` must be a non-empty sequence of positive integers, "
                f"got {block_out_channels!r}."
            )
        if not isinstance(layers_per_block, int) or layers_per_block < 1:
            raise ValueError(
                f"`identifier_layers_per_block` must be an integer >= 1, got {layers_per_block!r}."
            )
        if norm_num_groups is None:
            norm_num_groups = largest_group_count(block_out_channels)
        if any(c % norm_num_groups for c in block_out_channels):
            raise ValueError(
                f"`identifier_norm_num_groups` ({norm_num_groups}) must divide every entry of "
                f"`identifier_block_out_channels` {block_out_channels}."
            )
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        self.downsampling_factor = 2 ** (len(block_out_channels) - 1)
        self.unet = UNet2DModel(
            in_channels=2 * in_channels,
            out_channels=latent_dim,
            block_out_channels=block_out_channels,
            down_block_types=("DownBlock2D",) * len(block_out_channels),
            up_block_types=("UpBlock2D",) * len(block_out_channels),
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            add_attention=False,
        )

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | float | int, mixture_noise: torch.Tensor
    ):
        """Return the latent map z, shape ``(B, latent_dim, H, W)``, for ``x_t = sample`` and ``eta = mixture_noise``."""
        height, width = sample.shape[-2:]
        if height % self.downsampling_factor or width % self.downsampling_factor:
            raise ValueError(
                f"`sample` height and width must be divisible by {self.downsampling_factor} (the identifier's "
                f"downsampling factor), got {height}x{width}."
            )
        identifier_input = torch.cat([sample, mixture_noise.to(sample.dtype)], dim=1)
        return self.unet(identifier_input, timestep).sample
