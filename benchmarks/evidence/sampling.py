"""Sampling with the benchmark's solvers, and scoring one evaluation cell.

Solvers are diffusers' ``DDIMScheduler`` (eta 0), ``DPMSolverMultistepScheduler`` (DPM-Solver++,
2nd order) and ``DDPMScheduler`` (ancestral), built from the model's training scheduler config; E-TSDM
models get the E-TSDM variants (``ETSDM*Scheduler``), whose ``timesteps`` are the condition timesteps
f(t) while the update runs on the real grid. Vanilla models get the plain classes.
The initial noise x_T depends only on the seed, so every model of a seed starts from the same x_T.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor

from diffusers_smd.models import accepts_mixture_noise
from diffusers_smd.schedulers import ETSDMDDIMScheduler, ETSDMDDPMScheduler, ETSDMDPMSolverMultistepScheduler

__all__ = ["make_sampling_scheduler", "generate", "initial_noise_seed"]

_PLAIN = {"ddim": DDIMScheduler, "dpmsolver++": DPMSolverMultistepScheduler, "ddpm": DDPMScheduler}
_ETSDM = {
    "ddim": ETSDMDDIMScheduler,
    "dpmsolver++": ETSDMDPMSolverMultistepScheduler,
    "ddpm": ETSDMDDPMScheduler,
}
_EXTRA = {"dpmsolver++": {"algorithm_type": "dpmsolver++", "solver_order": 2}}


def initial_noise_seed(seed: int) -> int:
    """Seed of the generator that draws x_T (and then the solver's / SMD's noise) for benchmark seed ``seed``."""
    return 1_000_000 + seed


def make_sampling_scheduler(sampler: str, training_scheduler, etsdm: bool):
    """The solver ``sampler`` built from the training scheduler's config (E-TSDM class when ``etsdm``)."""
    if sampler not in _PLAIN:
        raise ValueError(f"sampler must be one of {tuple(_PLAIN)}, got {sampler!r}")
    scheduler_class = (_ETSDM if etsdm else _PLAIN)[sampler]
    return scheduler_class.from_config(training_scheduler.config, **_EXTRA.get(sampler, {}))


@torch.no_grad()
def generate(
    model,
    scheduler,
    num_inference_steps: int,
    num_samples: int,
    seed: int,
    batch_size: int,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """``num_samples`` images in [-1, 1] (float32, CPU), sampled in chunks of ``batch_size``.

    The stock diffusers loop: ``for t in scheduler.timesteps: x = scheduler.step(model(x, t), t, x)``;
    with an E-TSDM scheduler ``t`` is already the condition timestep. SMD models draw a fresh eta at
    every call from the same generator. Final images are clamped to [-1, 1], as diffusers pipelines do.
    """
    config = model.config
    shape = (num_samples, config.in_channels, config.sample_size, config.sample_size)
    generator = torch.Generator(device=device).manual_seed(initial_noise_seed(seed))
    noise = randn_tensor(shape, generator=generator, device=torch.device(device))
    mixture = accepts_mixture_noise(model)
    outputs = []
    for chunk in noise.split(batch_size):
        scheduler.set_timesteps(num_inference_steps, device=device)
        x = chunk * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(x, t)
            kwargs = {"generator": generator} if mixture else {}
            prediction = model(model_input, t, **kwargs).sample
            x = scheduler.step(prediction, t, x, generator=generator).prev_sample
        outputs.append(x.float().clamp(-1.0, 1.0).cpu())
    return torch.cat(outputs)
