"""The dilation-path Langevin sampler for unnormalised densities (Chehab and Korba, arXiv 2406.14040).

Pure path functions (:mod:`.path`), the diffusers scheduler and pipeline, targets with exact
references and the benchmark's standard instances, baselines at one interface and budget (ULA, MALA,
annealed Langevin on the geometric path, SMC, AIS, parallel tempering), the mode-weight extension with its
normalising-constant estimate, and sampling metrics.
"""

from .baselines import (
    LangevinSamplerOutput,
    SamplerOutput,
    annealed_geometric_langevin,
    mala,
    metropolis_adjusted_langevin,
    ula,
)
from .evaluator import NonFiniteTargetError, TargetEvaluator
from .metrics import (
    count_modes_found,
    effective_sample_size,
    entropic_wasserstein2,
    maximum_mean_discrepancy,
    mode_weight_tv,
    sliced_ks_distance,
    sliced_wasserstein2,
    wasserstein2,
)
from .path import (
    SecantCurvature,
    dilation_path_log_density,
    dilation_path_score,
    lambda_schedule,
    langevin_step,
    rescale_to_target,
    secant_curvature,
    typical_energy_window,
    validate_lambdas,
)
from .pipeline import DilationPathPipeline, DilationPathPipelineOutput
from .scheduler import (
    REWEIGHTING_INITIAL_STEP_SIZE,
    DilationPathDivergenceError,
    DilationPathScheduler,
    DilationPathSchedulerOutput,
)
from .standard_targets import STANDARD_TARGETS, UNEQUAL_WEIGHT_MIXTURES, make_standard_target
from .targets import GaussianMixture, ManyWell, NealsFunnel, Rings
from .tempering import annealed_importance_sampling, parallel_tempering, sequential_monte_carlo
from .weights import ModeReweighting, importance_resample

__all__ = [
    "DilationPathDivergenceError",
    "DilationPathPipeline",
    "DilationPathPipelineOutput",
    "DilationPathScheduler",
    "DilationPathSchedulerOutput",
    "GaussianMixture",
    "LangevinSamplerOutput",
    "ManyWell",
    "ModeReweighting",
    "NealsFunnel",
    "NonFiniteTargetError",
    "REWEIGHTING_INITIAL_STEP_SIZE",
    "Rings",
    "STANDARD_TARGETS",
    "SamplerOutput",
    "SecantCurvature",
    "TargetEvaluator",
    "UNEQUAL_WEIGHT_MIXTURES",
    "annealed_geometric_langevin",
    "annealed_importance_sampling",
    "count_modes_found",
    "dilation_path_log_density",
    "dilation_path_score",
    "effective_sample_size",
    "entropic_wasserstein2",
    "importance_resample",
    "lambda_schedule",
    "langevin_step",
    "make_standard_target",
    "mala",
    "maximum_mean_discrepancy",
    "metropolis_adjusted_langevin",
    "mode_weight_tv",
    "parallel_tempering",
    "rescale_to_target",
    "secant_curvature",
    "sequential_monte_carlo",
    "sliced_ks_distance",
    "sliced_wasserstein2",
    "typical_energy_window",
    "ula",
    "validate_lambdas",
    "wasserstein2",
]
