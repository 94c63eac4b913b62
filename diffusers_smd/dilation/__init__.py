"""The dilation-path Langevin sampler for unnormalised densities (Chehab and Korba, arXiv 2406.14040).

Pure path functions (:mod:`.path`), the diffusers scheduler and pipeline, targets with exact
references, baselines (ULA, MALA, annealed Langevin on the geometric path), the mode-weight extension
and sampling metrics.
"""

from .baselines import (
    LangevinSamplerOutput,
    annealed_geometric_langevin,
    mala,
    metropolis_adjusted_langevin,
    ula,
)
from .evaluator import TargetEvaluator
from .metrics import mode_weight_tv, sliced_wasserstein2
from .path import (
    SecantCurvature,
    dilation_path_log_density,
    dilation_path_score,
    lambda_schedule,
    langevin_step,
    rescale_to_target,
    secant_curvature,
    validate_lambdas,
)
from .pipeline import DilationPathPipeline, DilationPathPipelineOutput
from .scheduler import DilationPathDivergenceError, DilationPathScheduler, DilationPathSchedulerOutput
from .targets import GaussianMixture, NealsFunnel, Rings
from .weights import ModeReweighting, importance_resample

__all__ = [
    "DilationPathDivergenceError",
    "DilationPathPipeline",
    "DilationPathPipelineOutput",
    "DilationPathScheduler",
    "DilationPathSchedulerOutput",
    "GaussianMixture",
    "LangevinSamplerOutput",
    "ModeReweighting",
    "NealsFunnel",
    "Rings",
    "SecantCurvature",
    "TargetEvaluator",
    "annealed_geometric_langevin",
    "dilation_path_log_density",
    "dilation_path_score",
    "importance_resample",
    "lambda_schedule",
    "langevin_step",
    "mala",
    "metropolis_adjusted_langevin",
    "mode_weight_tv",
    "rescale_to_target",
    "secant_curvature",
    "sliced_wasserstein2",
    "ula",
    "validate_lambdas",
]
