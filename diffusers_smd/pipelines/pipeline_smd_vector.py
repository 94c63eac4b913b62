"""SMDVectorPipeline: the SMDPipeline loop for vector data (toy mixtures, exact-score experiments)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils import BaseOutput

from ..models import SMDVectorModel
from .pipeline_smd import SMDPipeline

__all__ = ["SMDVectorPipeline", "VectorPipelineOutput"]


@dataclass
class VectorPipelineOutput(BaseOutput):
    """Generated vectors, shape (batch, data_dim), in data space (not mapped to an image range)."""

    samples: torch.Tensor | np.ndarray


class SMDVectorPipeline(SMDPipeline):
    r"""Sample vectors with an :class:`SMDVectorModel` (plain or SMD) and any diffusers scheduler.

    The reverse loop is :class:`SMDPipeline`'s (a fresh mixture noise eta at every step from the call's
    ``generator``; E-TSDM schedulers work unchanged); only the sample shape ``(batch, data_dim)`` and the
    output differ: ``output_type`` ``"pt"`` (a tensor) or ``"np"`` (an array), values in data space.
    """

    supported_denoisers = (SMDVectorModel,)
    output_types = ("pt", "np")

    def _sample_shape(self, batch_size: int) -> tuple[int, ...]:
        return (batch_size, self.unet.config.data_dim)

    def _postprocess(self, latents: torch.Tensor, output_type: str):
        return latents.cpu().numpy() if output_type == "np" else latents

    def __call__(self, *args, output_type: str = "pt", return_dict: bool = True, **kwargs):
        """Arguments of :meth:`SMDPipeline.__call__`; returns :class:`VectorPipelineOutput` (``.samples``)."""
        (samples,) = super().__call__(*args, output_type=output_type, return_dict=False, **kwargs)
        return VectorPipelineOutput(samples=samples) if return_dict else (samples,)
