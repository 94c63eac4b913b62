"""SMDVectorModel: a small SMD denoiser for vector data (tabular rows, 2-D toys), fast on CPU.

The denoiser is a residual MLP with a sinusoidal time embedding. The SMD parts are the same as in the UNet
wrappers: an identifier g_xi(concat[x_t, eta], t) -> z and the hypernetwork f_phi (`MixtureHypernetwork`)
applied to the features right after the input projection and right before the output head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.activations import get_activation
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from ..mixture import MixtureHypernetwork

__all__ = ["SMDVectorModel", "SMDVectorModelOutput"]


@dataclass
class SMDVectorModelOutput(BaseOutput):
    """Output of `SMDVectorModel`: ``sample`` (B, data_dim), the prediction of the scheduler's target."""

    sample: torch.Tensor


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    return value


class _Identifier(nn.Module):
    """g_xi: concat[x_t, eta] and t -> latent z (B, latent_dim), an MLP with its own time embedding.

    It never sees x_0. Layers: Linear(2D, width) + emb(t), then (depth - 1) x [act, Linear(width, width)],
    then act, Linear(width, latent_dim).
    """

    def __init__(self, data_dim: int, width: int, depth: int, latent_dim: int, act_fn: str):
        super().__init__()
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(width, width, act_fn=act_fn)
        self.input = nn.Linear(2 * data_dim, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.output = nn.Linear(width, latent_dim)
        self.act = get_activation(act_fn)

    def forward(self, sample: torch.Tensor, eta: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        temb = self.time_embedding(self.time_proj(timesteps).to(sample.dtype))
        hidden = self.input(torch.cat([sample, eta], dim=1)) + temb
        for layer in self.hidden:
            hidden = layer(self.act(hidden))
        return self.output(self.act(hidden))


class _ResidualBlock(nn.Module):
    """h + fc2(act(fc1(act(h)) + time projection))."""

    def __init__(self, width: int, act_fn: str):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.time = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.act = get_activation(act_fn)

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return hidden + self.fc2(self.act(self.fc1(self.act(hidden)) + self.time(temb)))


class SMDVectorModel(ModelMixin, ConfigMixin):
    """Soft-mixture-denoising MLP for vectors (B, data_dim); ``use_mixture=False`` is the vanilla MLP.

    forward: h = P(x_t); h = f_phi_in(h, z); h = blocks(h, emb(t)); h = f_phi_out(h, z); out = head(h), with
    z = g_xi(concat[x_t, eta], t), eta ~ N(0, I) of the shape of x_t (Li et al., ICLR 2024, with the
    hypernetwork at the same two places as `SMDUNet2DModel`). Since f_phi's output projection starts at zero a
    fresh SMD model computes exactly what the vanilla MLP with the same weights computes. ``use_mixture=False``
    builds neither g_xi nor f_phi and runs the same code without them, so the two can be matched in
    parameter count by ``hidden_dim``.

    Args:
        data_dim: D, the vector length.
        hidden_dim: width of the denoiser MLP (and of its time embedding).
        num_layers: residual blocks of the denoiser.
        use_mixture: build and use the identifier and the two hypernetworks.
        latent_dim: channels of z (f_phi's L).
        identifier_hidden_dim: width of g_xi (default: hidden_dim // 4, at least 8).
        identifier_num_layers: linear layers of g_xi before its output layer.
        hypernet_num_layers: K of f_phi.
        act_fn: a diffusers activation name ("silu", "gelu", "relu", "mish").
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        data_dim: int = 2,
        hidden_dim: int = 128,
        num_layers: int = 3,
        use_mixture: bool = True,
        latent_dim: int = 16,
        identifier_hidden_dim: int | None = None,
        identifier_num_layers: int = 2,
        hypernet_num_layers: int = 2,
        act_fn: str = "silu",
    ):
        super().__init__()
        for name, value in (
            ("data_dim", data_dim),
            ("hidden_dim", hidden_dim),
            ("num_layers", num_layers),
            ("latent_dim", latent_dim),
            ("identifier_num_layers", identifier_num_layers),
            ("hypernet_num_layers", hypernet_num_layers),
        ):
            _positive_int(name, value)
        if identifier_hidden_dim is not None:
            _positive_int("identifier_hidden_dim", identifier_hidden_dim)
        if not isinstance(use_mixture, bool):
            raise TypeError(f"`use_mixture` must be True or False, got {use_mixture!r}.")
        get_activation(act_fn)  # raises ValueError naming the allowed activations

        self.time_proj = Timesteps(hidden_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(hidden_dim, hidden_dim, act_fn=act_fn)
        self.input_proj = nn.Linear(data_dim, hidden_dim)
        self.blocks = nn.ModuleList(_ResidualBlock(hidden_dim, act_fn) for _ in range(num_layers))
        self.act = get_activation(act_fn)
        self.output_proj = nn.Linear(hidden_dim, data_dim)
        if use_mixture:
            width = identifier_hidden_dim or max(8, hidden_dim // 4)
            self.identifier = _Identifier(data_dim, width, identifier_num_layers, latent_dim, act_fn)
            self.mixture_in = MixtureHypernetwork(hidden_dim, latent_dim, hypernet_num_layers)
            self.mixture_out = MixtureHypernetwork(hidden_dim, latent_dim, hypernet_num_layers)

    def _timesteps(self, timestep: torch.Tensor | float | int, sample: torch.Tensor) -> torch.Tensor:
        timesteps = torch.as_tensor(timestep, device=sample.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(sample.shape[0])
        if timesteps.shape != (sample.shape[0],):
            raise ValueError(
                f"`timestep` must be a scalar or have shape ({sample.shape[0]},), got {tuple(timesteps.shape)}."
            )
        return timesteps

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        return_dict: bool = True,
        *,
        mixture_noise: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> SMDVectorModelOutput | tuple[torch.Tensor]:
        """Predict the scheduler's target for ``sample`` (B, data_dim) at ``timestep`` (scalar or (B,)).

        ``mixture_noise`` is eta (shape of ``sample``); when None a fresh eta is drawn from ``generator``.
        Both are accepted and ignored when ``use_mixture=False``.
        """
        data_dim = self.config.data_dim
        if sample.ndim != 2 or sample.shape[1] != data_dim:
            raise ValueError(f"`sample` must have shape (batch, {data_dim}), got {tuple(sample.shape)}.")
        if mixture_noise is not None and mixture_noise.shape != sample.shape:
            raise ValueError(
                f"`mixture_noise` must have the shape of `sample` {tuple(sample.shape)}, got {tuple(mixture_noise.shape)}."
            )
        timesteps = self._timesteps(timestep, sample)
        temb = self.time_embedding(self.time_proj(timesteps).to(sample.dtype))

        latent = None
        if self.config.use_mixture:
            if mixture_noise is None:
                mixture_noise = randn_tensor(
                    sample.shape, generator=generator, device=sample.device, dtype=sample.dtype
                )
            latent = self.identifier(sample, mixture_noise.to(sample.dtype), timesteps)

        hidden = self.input_proj(sample)
        if latent is not None:
            hidden = self.mixture_in(hidden, latent)
        for block in self.blocks:
            hidden = block(hidden, temb)
        if latent is not None:
            hidden = self.mixture_out(hidden, latent)
        output = self.output_proj(self.act(hidden))
        if not return_dict:
            return (output,)
        return SMDVectorModelOutput(sample=output)
