"""E-TSDM version of diffusers' DPMSolverMultistepScheduler (Lu et al. 2022, 2023)."""

from __future__ import annotations

import torch
from diffusers import DPMSolverMultistepScheduler

from .etsdm_mixin import ETSDMSchedulerMixin, etsdm_init, etsdm_set_timesteps

__all__ = ["ETSDMDPMSolverMultistepScheduler"]


class ETSDMDPMSolverMultistepScheduler(ETSDMSchedulerMixin, DPMSolverMultistepScheduler):
    """`DPMSolverMultistepScheduler` whose `timesteps` are E-TSDM condition timesteps f(t).

    All `algorithm_type`s (dpmsolver++, sde-dpmsolver++, dpmsolver, sde-dpmsolver) and solver orders
    1-3: the parent already steps by index on sigmas computed from the real grid; this class only
    starts the index at the FIRST occurrence of a (possibly repeated) condition timestep.
    Extra config keys: `etsdm_threshold` (None: num_train_timesteps // 10) and `etsdm_intervals` (5).
    """

    __init__ = etsdm_init(DPMSolverMultistepScheduler)
    set_timesteps = etsdm_set_timesteps(DPMSolverMultistepScheduler)

    def index_for_timestep(
        self, timestep: int | torch.Tensor, schedule_timesteps: torch.Tensor | None = None
    ) -> int:
        """First index of the exposed `timestep` in `schedule_timesteps` (default: `timesteps`).

        Used by `add_noise` without a begin index; raises ValueError when the value is absent.
        """
        if schedule_timesteps is None:
            schedule_timesteps = self.timesteps
        candidates = (schedule_timesteps == timestep).nonzero()
        if len(candidates) == 0:
            raise ValueError(f"timestep {timestep!r} is not in `timesteps` of this scheduler.")
        return candidates[0].item()
