"""E-TSDM version of diffusers' DDIMScheduler (Song et al. 2021)."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

from .etsdm_mixin import ETSDMSchedulerMixin, etsdm_index_step, etsdm_init, etsdm_set_timesteps

__all__ = ["ETSDMDDIMScheduler"]


class ETSDMDDIMScheduler(ETSDMSchedulerMixin, DDIMScheduler):
    """`DDIMScheduler` whose `timesteps` are E-TSDM condition timesteps f(t); it steps on the real grid.

    The update is DDIM's (Song et al. 2021, eq. 12) at the real timestep `true_timesteps[step_index]`;
    only the network's time condition is shared (Yang et al. 2024).
    Extra config keys: `etsdm_threshold` (None: num_train_timesteps // 10) and `etsdm_intervals` (5).

    Note: `DDIMPipeline` replaces any scheduler it is given with a plain `DDIMScheduler` (diffusers
    then warns that `etsdm_threshold` / `etsdm_intervals` are ignored). Assign the scheduler after
    construction (`pipe.scheduler = ETSDMDDIMScheduler.from_config(pipe.scheduler.config)`) or use
    `DDPMPipeline`, which keeps the scheduler it is given.
    """

    __init__ = etsdm_init(DDIMScheduler)
    set_timesteps = etsdm_set_timesteps(DDIMScheduler)
    step = etsdm_index_step(DDIMScheduler)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor
    ) -> torch.Tensor:
        """`DDIMScheduler.add_noise` at REAL timesteps; after `set_begin_index`, the exposed timestep
        of the current index (what img2img pipelines pass) is replaced by its real timestep."""
        return super().add_noise(original_samples, noise, self._true_timesteps_for_noise(timesteps))
