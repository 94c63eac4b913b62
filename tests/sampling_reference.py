"""A sampling loop written out by hand: the independent reference the pipeline and CLI tests compare with."""

import inspect

import torch


def sampling_loop(unet, scheduler, num_inference_steps, generator, shape, condition=None, mixture_noise=True):
    """Algorithm 2 of DDPM with SMD, step by step: images in [0, 1], float (N, C, H, W).

    x_T ~ N(0, sigma_init^2 I); at each step t a fresh eta ~ N(0, I) (``mixture_noise``), the network at
    ``condition(t)`` (E-TSDM's f(t); default t) and ``scheduler.step`` at the real t, with the generator when the
    step takes one. Everything is drawn from ``generator`` in that order: x_T, then per step eta and the step's noise.
    """
    scheduler.set_timesteps(num_inference_steps)
    x = torch.randn(shape, generator=generator) * scheduler.init_noise_sigma
    step_kwargs = (
        {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    )
    with torch.no_grad():
        for t in scheduler.timesteps:
            kwargs = {"mixture_noise": torch.randn(shape, generator=generator)} if mixture_noise else {}
            model_t = condition(t) if condition is not None else t
            output = unet(scheduler.scale_model_input(x, t), model_t, **kwargs).sample
            x = scheduler.step(output, t, x, **step_kwargs).prev_sample
    return (x / 2 + 0.5).clamp(0, 1)
