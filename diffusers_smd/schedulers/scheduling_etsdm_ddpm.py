"""E-TSDM version of diffusers' DDPMScheduler (ancestral sampling, Ho et al. 2020)."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from .etsdm_mixin import ETSDMSchedulerMixin, etsdm_index_step, etsdm_init, etsdm_set_timesteps

__all__ = ["ETSDMDDPMScheduler"]


class ETSDMDDPMScheduler(ETSDMSchedulerMixin, DDPMScheduler):
    """`DDPMScheduler` whose `timesteps` are E-TSDM condition timesteps f(t); it steps on the real grid.

    The update is DDPM's posterior step (Ho et al. 2020, eq. 7) at the real timestep
    `true_timesteps[step_index]`; only the network's time condition is shared (Yang et al. 2024).
    Extra config keys: `etsdm_threshold` (None: num_train_timesteps // 10) and `etsdm_intervals` (5).
    """

    __init__ = etsdm_init(DDPMScheduler)
    set_timesteps = etsdm_set_timesteps(DDPMScheduler)
    step = etsdm_index_step(DDPMScheduler)

    def previous_timestep(self, timestep: int) -> int:
        """The real timestep after `timestep` on the real grid (-1 after the last one)."""
        grid = self._true_timestep_list
        index = self._step_index
        if index is None or index >= len(grid) or grid[index] != timestep:
            value = timestep.item() if isinstance(timestep, torch.Tensor) else timestep
            if value not in grid:
                raise ValueError(f"timestep {value!r} is not in `true_timesteps`.")
            index = grid.index(value)
        return grid[index + 1] if index + 1 < len(grid) else -1

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor
    ) -> torch.Tensor:
        """`DDPMScheduler.add_noise` at REAL timesteps; after `set_begin_index`, the exposed timestep
        of the current index (what img2img pipelines pass) is replaced by its real timestep."""
        return super().add_noise(original_samples, noise, self._true_timesteps_for_noise(timesteps))
