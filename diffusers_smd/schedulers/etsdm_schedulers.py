"""The 14 E-TSDM schedulers: one two-line declaration per diffusers parent.

Each is its parent with ``timesteps`` = the condition timesteps ``f(t)`` (Yang et al. 2024) and every
update computed on the parent's real grid (:mod:`.etsdm_mixin`). Extra config keys:
``etsdm_threshold`` (None: a tenth of ``num_train_timesteps``) and ``etsdm_intervals`` (5); 0 in either
switches E-TSDM off, and the scheduler then is its parent.
"""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    TCDScheduler,
    UniPCMultistepScheduler,
)

from .etsdm_mixin import ETSDMSchedulerMixin

__all__ = [
    "ETSDMDDIMScheduler",
    "ETSDMDDPMScheduler",
    "ETSDMDEISMultistepScheduler",
    "ETSDMDPMSolverMultistepScheduler",
    "ETSDMDPMSolverSinglestepScheduler",
    "ETSDMEulerAncestralDiscreteScheduler",
    "ETSDMEulerDiscreteScheduler",
    "ETSDMFlowMatchEulerDiscreteScheduler",
    "ETSDMHeunDiscreteScheduler",
    "ETSDMKDPM2DiscreteScheduler",
    "ETSDMLCMScheduler",
    "ETSDMLMSDiscreteScheduler",
    "ETSDMTCDScheduler",
    "ETSDMUniPCMultistepScheduler",
]


class ETSDMDDPMScheduler(ETSDMSchedulerMixin, DDPMScheduler):
    """E-TSDM variant of `DDPMScheduler`: ancestral sampling (Ho et al. 2020, eq. 7) with the network at f(t)."""


class ETSDMDDIMScheduler(ETSDMSchedulerMixin, DDIMScheduler):
    """E-TSDM variant of `DDIMScheduler` (Song et al. 2021, eq. 12) with the network at f(t).

    `DDIMPipeline` replaces any scheduler with a plain `DDIMScheduler` (diffusers then warns that the E-TSDM
    keys are ignored): assign this one after constructing the pipeline, or use `DDPMPipeline`.
    """


class ETSDMDPMSolverMultistepScheduler(ETSDMSchedulerMixin, DPMSolverMultistepScheduler):
    """E-TSDM variant of `DPMSolverMultistepScheduler` (DPM-Solver / DPM-Solver++, Lu et al. 2022, 2023)."""


class ETSDMDPMSolverSinglestepScheduler(ETSDMSchedulerMixin, DPMSolverSinglestepScheduler):
    """E-TSDM variant of `DPMSolverSinglestepScheduler` (single-step DPM-Solver, Lu et al. 2022)."""


class ETSDMEulerDiscreteScheduler(ETSDMSchedulerMixin, EulerDiscreteScheduler):
    """E-TSDM variant of `EulerDiscreteScheduler` (Karras et al. 2022, Algorithm 2); float timesteps are shared too."""


class ETSDMEulerAncestralDiscreteScheduler(ETSDMSchedulerMixin, EulerAncestralDiscreteScheduler):
    """E-TSDM variant of `EulerAncestralDiscreteScheduler` (ancestral Euler, k-diffusion)."""


class ETSDMHeunDiscreteScheduler(ETSDMSchedulerMixin, HeunDiscreteScheduler):
    """E-TSDM variant of `HeunDiscreteScheduler` (Karras et al. 2022, Algorithm 1); both model calls of a step get f(t)."""


class ETSDMUniPCMultistepScheduler(ETSDMSchedulerMixin, UniPCMultistepScheduler):
    """E-TSDM variant of `UniPCMultistepScheduler` (UniPC predictor-corrector, Zhao et al. 2023)."""


class ETSDMDEISMultistepScheduler(ETSDMSchedulerMixin, DEISMultistepScheduler):
    """E-TSDM variant of `DEISMultistepScheduler` (DEIS, Zhang and Chen 2023)."""


class ETSDMLMSDiscreteScheduler(ETSDMSchedulerMixin, LMSDiscreteScheduler):
    """E-TSDM variant of `LMSDiscreteScheduler` (linear multistep, k-diffusion)."""


class ETSDMKDPM2DiscreteScheduler(ETSDMSchedulerMixin, KDPM2DiscreteScheduler):
    """E-TSDM variant of `KDPM2DiscreteScheduler` (DPM-Solver-2, Karras et al. 2022); both model calls get f(t)."""


class ETSDMLCMScheduler(ETSDMSchedulerMixin, LCMScheduler):
    """E-TSDM variant of `LCMScheduler` (latent consistency models, Luo et al. 2023)."""


class ETSDMTCDScheduler(ETSDMSchedulerMixin, TCDScheduler):
    """E-TSDM variant of `TCDScheduler` (trajectory consistency distillation, Zheng et al. 2024)."""


class ETSDMFlowMatchEulerDiscreteScheduler(
    ETSDMSchedulerMixin, FlowMatchEulerDiscreteScheduler, integer_timesteps=False
):
    """E-TSDM variant of `FlowMatchEulerDiscreteScheduler` (SD3 / Flux, Esser et al. 2024).

    Its timesteps are floats, ``sigma * num_train_timesteps``; the threshold is in those units
    (default ``num_train_timesteps / 10``, i.e. sigma < 0.1) and may be a float.
    """
