"""Generation pipelines, and what makes their saved folders load through ``DiffusionPipeline.from_pretrained``."""

from .loading import register_with_diffusers, write_loading_shims
from .pipeline_smd import SMDPipeline
from .pipeline_smd_vector import SMDVectorPipeline, VectorPipelineOutput

__all__ = ["SMDPipeline", "SMDVectorPipeline", "VectorPipelineOutput", "write_loading_shims"]

register_with_diffusers(SMDPipeline, SMDVectorPipeline)
