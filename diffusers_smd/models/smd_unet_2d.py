"""SMDUNet2DModel: a diffusers UNet2DModel with the SMD mixture modules (identifier g_xi, hypernetwork f_phi)."""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from diffusers.models.unets.unet_2d import UNet2DOutput

from .smd_unet_base import SMDUNetWrapperMixin

__all__ = ["SMDUNet2DModel"]


class SMDUNet2DModel(SMDUNetWrapperMixin):
    """A :class:`~diffusers.UNet2DModel` turned into a Soft Mixture Denoising model (Li et al., ICLR 2024).

    The backward step is the continuous mixture ``p(x_{t-1}|x_t) = E_z N(mu_{theta, f_phi(z)}(x_t, t), sigma_t^2 I)``
    with ``z = g_xi(x_t, eta, t)``, ``eta ~ N(0, I)``: the identifier g_xi (:class:`MixtureIdentifier`) maps
    ``(x_t, eta, t)`` to a per-pixel latent map, and the hypernetwork f_phi (:class:`MixtureHypernetwork`)
    modulates the wrapped UNet's features right after ``conv_in`` and right before ``conv_norm_out``.
    The time embedding is unchanged. f_phi's output projection starts at zero, so a freshly wrapped
    model computes exactly what the wrapped UNet computes.

    Called like a plain UNet (``model(x, t).sample``) it runs unchanged in stock pipelines such as
    ``DDPMPipeline``: under ``torch.no_grad()`` (every pipeline call) eta is derived from ``(x_t, t)``
    (:func:`~diffusers_smd.models.derived_mixture_noise`), so the pipeline's ``generator`` alone fixes the
    images while each step and each image still gets its own eta; when autograd is recording (training) a
    fresh eta is drawn from torch's global random state. Pass ``mixture_noise`` (eta) for a deterministic
    call, or ``generator`` to draw eta from it; :func:`~diffusers_smd.models.resolve_mixture_noise` states
    the rule.

    Args:
        unet_config: config of the wrapped UNet2DModel (``dict(unet.config)``); use :meth:`from_unet`
            to wrap an existing model.
        latent_dim: channels L of the latent map z (100 in the paper's runs).
        num_hypernet_layers: K, the number of rank-one-plus-identity maps in f_phi.
        identifier_block_out_channels: the identifier's widths, one per resolution stage; default about
            1/4 of the denoiser's first two widths.
        identifier_layers_per_block: resnet layers per identifier stage.
        identifier_norm_num_groups: GroupNorm groups of the identifier; default the largest <= 32 that fits.
    """

    wrapped_class = UNet2DModel

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
        *,
        mixture_noise: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> UNet2DOutput | tuple:
        """The wrapped UNet2DModel's forward with f_phi(g_xi(sample, eta, timestep)) applied inside.

        Arguments and output are those of :meth:`diffusers.UNet2DModel.forward`, plus the keyword-only
        ``mixture_noise`` (eta, shaped like ``sample``) and ``generator`` (draws eta when it is not given);
        without either, eta follows :func:`~diffusers_smd.models.resolve_mixture_noise`.
        """
        latent = self.mixture_latent(sample, timestep, mixture_noise, generator)
        return self._run_mixed(
            latent, self.unet, sample, timestep, class_labels=class_labels, return_dict=return_dict
        )
