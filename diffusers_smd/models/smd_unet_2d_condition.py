"""SMDUNet2DConditionModel: a diffusers UNet2DConditionModel with the SMD mixture modules."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from .smd_unet_base import SMDUNetWrapperMixin

__all__ = ["SMDUNet2DConditionModel"]


class SMDUNet2DConditionModel(SMDUNetWrapperMixin):
    """A :class:`~diffusers.UNet2DConditionModel` (text- or class-conditioned, pixel or latent space) turned
    into a Soft Mixture Denoising model.

    Same construction as :class:`SMDUNet2DModel`: z = g_xi(x_t, eta, t) from a small unconditional UNet
    (the identifier sees x_t and t only), f_phi(z) applied right after ``conv_in`` and right before the
    output head (``conv_norm_out``, or ``conv_out`` when the UNet has no output norm); zero-initialised, so a
    freshly wrapped model equals the wrapped UNet. Every forward argument of the wrapped model passes through.
    See :class:`SMDUNet2DModel` for the arguments.

    In stock pipelines (``StableDiffusionPipeline``, img2img, inpaint, ``StableDiffusionXLPipeline``, ...) eta
    is derived from ``(x_t, t)`` (:func:`~diffusers_smd.models.derived_mixture_noise`): the same ``generator``
    seed gives the same images, every step and every image gets its own eta, and classifier-free guidance's
    conditional and unconditional halves (the same latents) share one eta, so the guidance direction compares
    the two predictions of one mixture component (the identifier never sees the prompt).
    """

    wrapped_class = UNet2DConditionModel

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        down_block_additional_residuals: tuple[torch.Tensor] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        down_intrablock_additional_residuals: tuple[torch.Tensor] | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
        *,
        mixture_noise: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> UNet2DConditionOutput | tuple:
        """The wrapped UNet2DConditionModel's forward with f_phi(g_xi(sample, eta, timestep)) applied inside.

        Arguments and output are those of :meth:`diffusers.UNet2DConditionModel.forward`, plus the
        keyword-only ``mixture_noise`` (eta, shaped like ``sample``) and ``generator``; without either, eta
        follows :func:`~diffusers_smd.models.resolve_mixture_noise`.
        """
        latent = self.mixture_latent(sample, timestep, mixture_noise, generator)
        return self._run_mixed(
            latent,
            self.unet,
            sample,
            timestep,
            encoder_hidden_states,
            class_labels=class_labels,
            timestep_cond=timestep_cond,
            attention_mask=attention_mask,
            cross_attention_kwargs=cross_attention_kwargs,
            added_cond_kwargs=added_cond_kwargs,
            down_block_additional_residuals=down_block_additional_residuals,
            mid_block_additional_residual=mid_block_additional_residual,
            down_intrablock_additional_residuals=down_intrablock_additional_residuals,
            encoder_attention_mask=encoder_attention_mask,
            return_dict=return_dict,
        )
