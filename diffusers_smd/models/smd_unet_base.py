"""What the two SMD UNet wrappers share: building the mixture modules and hooking them into a UNet.

The hypernetwork f_phi is applied through forward hooks on the wrapped UNet: a forward hook on
``conv_in`` (its output is the first feature map) and a forward pre-hook on ``conv_norm_out`` (its
input is the last feature map, before the output head; ``conv_out`` when a UNet has no output norm).
The wrapped UNet's own ``forward`` therefore runs unchanged, with all of its arguments and options,
and a diffusers release that reorders its forward body does not break the wrapper. The hooks act only
while the wrapper's ``forward`` is running; calling ``wrapper.unet`` directly gives the plain UNet.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Sequence
from typing import Any

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from ..mixture import MixtureHypernetwork
from .identifier import MixtureIdentifier, default_identifier_channels
from .mixture_noise import resolve_mixture_noise

# Set by ``from_unet`` so that ``__init__`` adopts an existing UNet instead of building a random one.
_UNET_TO_ADOPT: contextvars.ContextVar[nn.Module | None] = contextvars.ContextVar(
    "_unet_to_adopt", default=None
)


@contextlib.contextmanager
def _adopting(unet: nn.Module):
    token = _UNET_TO_ADOPT.set(unet)
    try:
        yield
    finally:
        _UNET_TO_ADOPT.reset(token)


class SMDUNetWrapperMixin(ModelMixin, ConfigMixin):
    """Shared machinery of :class:`SMDUNet2DModel` and :class:`SMDUNet2DConditionModel`.

    Subclasses set ``wrapped_class`` and define ``forward``; the constructor (and so the saved config) is
    this one. See :class:`SMDUNet2DModel` for the arguments.
    """

    wrapped_class: type[ModelMixin]
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        unet_config: dict[str, Any] | None = None,
        latent_dim: int = 100,
        num_hypernet_layers: int = 2,
        identifier_block_out_channels: Sequence[int] | None = None,
        identifier_layers_per_block: int = 1,
        identifier_norm_num_groups: int | None = None,
    ):
        super().__init__()
        for name, value in (("latent_dim", latent_dim), ("num_hypernet_layers", num_hypernet_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
        adopted = _UNET_TO_ADOPT.get()
        if adopted is None:
            if not isinstance(unet_config, dict):
                raise ValueError(
                    f"`unet_config` must be the config dict of a {self.wrapped_class.__name__}, got "
                    f"{type(unet_config).__name__}. To wrap an existing model use `{type(self).__name__}.from_unet(unet)`."
                )
            class_name = unet_config.get("_class_name", self.wrapped_class.__name__)
            if class_name != self.wrapped_class.__name__:
                raise ValueError(
                    f"`unet_config` describes a {class_name}; {type(self).__name__} wraps a "
                    f"{self.wrapped_class.__name__}."
                )
            self.unet = self.wrapped_class.from_config(unet_config)
        else:
            self.unet = adopted

        block_out_channels = tuple(self.unet.config.block_out_channels)
        if identifier_block_out_channels is None:
            identifier_block_out_channels = default_identifier_channels(block_out_channels)
        self.identifier = MixtureIdentifier(
            in_channels=self.unet.config.in_channels,
            latent_dim=latent_dim,
            block_out_channels=identifier_block_out_channels,
            layers_per_block=identifier_layers_per_block,
            norm_num_groups=identifier_norm_num_groups,
        )
        # Record the resolved identifier size, so a saved config rebuilds exactly this model.
        self.register_to_config(
            identifier_block_out_channels=list(identifier_block_out_channels),
            identifier_norm_num_groups=self.identifier.unet.config.norm_num_groups,
        )

        head = self.unet.conv_norm_out if self.unet.conv_norm_out is not None else self.unet.conv_out
        head_channels = head.num_channels if isinstance(head, nn.GroupNorm) else head.in_channels
        self.hypernet_in = MixtureHypernetwork(
            self.unet.conv_in.out_channels, latent_dim, num_hypernet_layers
        )
        self.hypernet_out = MixtureHypernetwork(head_channels, latent_dim, num_hypernet_layers)
        self._active_latent: torch.Tensor | None = None
        self.unet.conv_in.register_forward_hook(self._mix_after_conv_in)
        head.register_forward_pre_hook(self._mix_before_head)

    # -- hooks -------------------------------------------------------------------------------------
    def _mix_after_conv_in(self, module: nn.Module, inputs: tuple, output: torch.Tensor):
        if self._active_latent is None:
            return None
        return self.hypernet_in(output, self._active_latent)

    def _mix_before_head(self, module: nn.Module, inputs: tuple):
        if self._active_latent is None:
            return None
        return (self.hypernet_out(inputs[0], self._active_latent), *inputs[1:])

    # -- forward -----------------------------------------------------------------------------------
    def _check_sample(self, sample: torch.Tensor) -> None:
        in_channels = self.unet.config.in_channels
        if not isinstance(sample, torch.Tensor) or sample.dim() != 4 or sample.shape[1] != in_channels:
            shape = tuple(sample.shape) if isinstance(sample, torch.Tensor) else type(sample).__name__
            raise ValueError(f"`sample` must have shape (batch, {in_channels}, height, width), got {shape}.")

    def draw_mixture_noise(
        self,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """Draw eta ~ N(0, I) with the shape, device and dtype of ``sample`` (``diffusers.utils.torch_utils.randn_tensor``)."""
        return randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)

    def mixture_latent(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        mixture_noise: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """Return z = g_xi(x_t, eta, t), with eta chosen by :func:`~diffusers_smd.models.resolve_mixture_noise`."""
        self._check_sample(sample)
        eta = resolve_mixture_noise(sample, timestep, mixture_noise, generator)
        return self.identifier(sample, timestep, eta)

    def _run_mixed(self, latent: torch.Tensor, call, *args, **kwargs):
        """Run the wrapped UNet with f_phi(latent) hooked in at its two feature maps."""
        if self._active_latent is not None:
            raise RuntimeError(f"{type(self).__name__}.forward is not re-entrant.")
        self._active_latent = latent
        try:
            return call(*args, **kwargs)
        finally:
            self._active_latent = None

    # -- construction and config -------------------------------------------------------------------
    @classmethod
    def from_unet(cls, unet: ModelMixin, **smd_config: Any):
        """Wrap an existing (e.g. pretrained) UNet; the fresh wrapper computes exactly what ``unet`` computes.

        ``unet`` is adopted, not copied; the new modules get its device and dtype. ``smd_config`` holds
        ``latent_dim``, ``num_hypernet_layers``, ``identifier_block_out_channels``,
        ``identifier_layers_per_block``, ``identifier_norm_num_groups``.
        """
        if not isinstance(unet, cls.wrapped_class):
            raise TypeError(
                f"`unet` must be a diffusers {cls.wrapped_class.__name__} for {cls.__name__}, "
                f"got {type(unet).__name__}."
            )
        if "unet_config" in smd_config:
            raise TypeError("`unet_config` is taken from `unet`; do not pass it to from_unet.")
        # Saved in full: no `_use_default_values` (defaults may change between releases), no local path.
        unet_config = {
            k: v for k, v in unet.config.items() if k not in ("_use_default_values", "_name_or_path")
        }
        with _adopting(unet):
            wrapper = cls(unet_config=unet_config, **smd_config)
        wrapper.identifier.to(device=unet.device, dtype=unet.dtype)
        wrapper.hypernet_in.to(device=unet.device, dtype=unet.dtype)
        wrapper.hypernet_out.to(device=unet.device, dtype=unet.dtype)
        return wrapper

    @property
    def config(self) -> FrozenDict:
        """This model's config, with the wrapped UNet's public keys (``sample_size``, ``in_channels``, ...) as
        read-only fallbacks, so pipelines that read ``unet.config`` work unchanged. Only the SMD keys and
        ``unet_config`` are saved."""
        own = self._internal_dict
        unet = self.__dict__.get("_modules", {}).get("unet")
        if unet is None:
            return own
        merged = {k: v for k, v in unet.config.items() if not k.startswith("_")}
        merged.update(own)
        return FrozenDict(merged)

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        # A merged `model.config` (see `config`) carries the wrapped UNet's keys; they live in `unet_config`.
        unet_config = config_dict.get("unet_config") or {}
        own_keys = cls._get_init_keys(cls)
        config_dict = {k: v for k, v in config_dict.items() if k in own_keys or k not in unet_config}
        return super().extract_init_dict(config_dict, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Fall back to the wrapped UNet for its attributes (``add_embedding``, ``attn_processors``, ...).
        try:
            return super().__getattr__(name)
        except AttributeError:
            unet = self.__dict__.get("_modules", {}).get("unet")
            if unet is None or name.startswith("_"):
                raise
            return getattr(unet, name)
