"""E-TSDM schedulers: drop-in subclasses of diffusers' DDPM, DDIM and DPM-Solver schedulers."""

from .etsdm_mixin import ETSDMSchedulerMixin
from .scheduling_etsdm_ddim import ETSDMDDIMScheduler
from .scheduling_etsdm_ddpm import ETSDMDDPMScheduler
from .scheduling_etsdm_dpmsolver_multistep import ETSDMDPMSolverMultistepScheduler

__all__ = [
    "ETSDMDDIMScheduler",
    "ETSDMDDPMScheduler",
    "ETSDMDPMSolverMultistepScheduler",
    "ETSDMSchedulerMixin",
]
