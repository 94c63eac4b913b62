"""Sampling: the scheduler registry by name, generation through the pipeline classes, image grids.

The one generation path of the package. The CLI (``sample``, ``eval``, ``quickstart``), the training-time
sample grids and the benchmarks all call :func:`generate`, which runs the pipeline's own ``__call__``
(never a hand-written loop) and checks the images before anyone writes them.

* :data:`SCHEDULERS` maps a sampler name (``ddim``, ``dpmsolver++``, ...) to its diffusers class and
  settings; ``etsdm-<name>`` is the E-TSDM variant of the same sampler; ``auto`` picks DPM-Solver++.
* :func:`make_scheduler` builds a named sampler from a trained pipeline's scheduler config. A model trained
  with E-TSDM (its scheduler config records ``etsdm_threshold``) always gets the E-TSDM variant: asking
  for ``ddim`` on such a model gives ``etsdm-ddim``, so the network is never queried at the wrong time
  condition.
* :func:`to_uint8` and :func:`image_grid` are the one image converter and the one grid maker.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = [
    "AUTO",
    "ETSDM_PREFIX",
    "SCHEDULERS",
    "NonFiniteSamplesError",
    "SamplerSpec",
    "generate",
    "image_grid",
    "make_scheduler",
    "max_inference_steps",
    "sample_batches",
    "save_grid",
    "scheduler_choices",
    "to_uint8",
    "trained_with_etsdm",
]

logger = logging.getLogger(__name__)

AUTO = "auto"
ETSDM_PREFIX = "etsdm-"


@dataclass(frozen=True)
class SamplerSpec:
    """A named sampler: a diffusers scheduler class and the config values that make it this sampler."""

    class_name: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def scheduler_class(self) -> type:
        import diffusers

        return getattr(diffusers, self.class_name)


#: Sampler name -> spec. ``etsdm-<name>`` names the E-TSDM variant of each (see :func:`scheduler_choices`).
#: The DDPM-family samplers a model trained here can use (LCM / TCD need consistency-distilled models and the
#: flow-matching Euler a flow model, so they are left out; their E-TSDM variants exist in the library).
SCHEDULERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec("DDPMScheduler"),
    "ddim": SamplerSpec("DDIMScheduler"),
    "dpmsolver++": SamplerSpec("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmsolver-singlestep": SamplerSpec("DPMSolverSinglestepScheduler"),
    "unipc": SamplerSpec("UniPCMultistepScheduler"),
    "deis": SamplerSpec("DEISMultistepScheduler"),
    "euler": SamplerSpec("EulerDiscreteScheduler"),
    "euler-ancestral": SamplerSpec("EulerAncestralDiscreteScheduler"),
    "heun": SamplerSpec("HeunDiscreteScheduler"),
    "kdpm2": SamplerSpec("KDPM2DiscreteScheduler"),
    "lms": SamplerSpec("LMSDiscreteScheduler"),
}
DEFAULT_SAMPLER = "dpmsolver++"


class NonFiniteSamplesError(ValueError):
    """Generation produced NaN or infinite values; nothing was written."""


def _etsdm_variant(scheduler_class: type) -> type | None:
    from .schedulers import ETSDM_VARIANTS

    return ETSDM_VARIANTS.get(scheduler_class)


def scheduler_choices() -> list[str]:
    """Every accepted sampler name: ``auto``, the plain names, and ``etsdm-<name>`` where a variant exists."""
    etsdm = [ETSDM_PREFIX + name for name, spec in SCHEDULERS.items() if _etsdm_variant(spec.scheduler_class)]
    return [AUTO, *SCHEDULERS, *etsdm]


def trained_with_etsdm(scheduler_config: Any) -> bool:
    """Whether a pipeline's scheduler config records E-TSDM settings (the model was trained with E-TSDM)."""
    from .schedulers import etsdm_settings_from_config

    return etsdm_settings_from_config(scheduler_config) is not None


def make_scheduler(name: str, base_config: Any) -> tuple[Any, str]:
    """The sampler ``name`` built from a trained pipeline's scheduler config; returns ``(scheduler, resolved name)``.

    ``auto`` is DPM-Solver++. For a model trained with E-TSDM every sampler is its E-TSDM variant, with the
    model's settings (``ddim`` resolves to ``etsdm-ddim``). When the model's scheduler clips x_0
    (``clip_sample``, the DDPM default) and the sampler has no ``clip_sample`` of its own, it clips through
    ``thresholding``, which equals clipping exactly when the range is 1 (``sample_max_value`` 1); for another
    ``clip_sample_range`` such samplers do not clip (thresholding would rescale x_0 instead).
    """
    choices = scheduler_choices()
    if name not in choices:
        raise ValueError(f"--scheduler must be one of {choices}, got {name!r}")
    base_name = DEFAULT_SAMPLER if name == AUTO else name.removeprefix(ETSDM_PREFIX)
    trained = trained_with_etsdm(base_config)
    if name.startswith(ETSDM_PREFIX) and not trained:
        logger.warning(
            "--scheduler %s: this model was trained without E-TSDM; the sampler shares early timesteps anyway "
            "(default settings)",
            name,
        )
    wants_etsdm = name.startswith(ETSDM_PREFIX) or trained
    spec = SCHEDULERS[base_name]
    scheduler_class = spec.scheduler_class
    if wants_etsdm:
        variant = _etsdm_variant(scheduler_class)
        if variant is None:
            raise ValueError(
                f"--scheduler {name!r}: this model was trained with E-TSDM and {base_name!r} has no E-TSDM "
                f"variant; choose one of {[c for c in choices if c.startswith(ETSDM_PREFIX)]}"
            )
        scheduler_class = variant
    settings = dict(spec.settings)
    parameters = inspect.signature(scheduler_class.__init__).parameters
    clips_to_unit_range = (
        base_config.get("clip_sample") and float(base_config.get("clip_sample_range", 1.0)) == 1.0
    )
    if clips_to_unit_range and "clip_sample" not in parameters and "thresholding" in parameters:
        settings.update(thresholding=True, sample_max_value=1.0)
    resolved = (ETSDM_PREFIX if wants_etsdm else "") + base_name
    return scheduler_class.from_config(base_config, **settings), resolved


def max_inference_steps(scheduler: Any, requested: int) -> int | None:
    """None when ``scheduler`` can run ``requested`` steps; else the largest step count it can run.

    Runs the scheduler's own loop on a 1-element sample with a zero model output (microseconds per step):
    some solvers (DPM-Solver, UniPC) return NaN when the step count reaches num_train_timesteps, and the
    DDPM-family ones refuse more steps than training timesteps.
    """

    def runs(count: int) -> bool:
        probe = copy.deepcopy(scheduler)
        try:
            probe.set_timesteps(count)
            sample = torch.ones(1, 1, 1, 1) * getattr(probe, "init_noise_sigma", 1.0)
            for t in probe.timesteps:
                model_input = probe.scale_model_input(sample, t)
                sample = probe.step(torch.zeros_like(model_input), t, sample).prev_sample
        except (ValueError, IndexError, RuntimeError):
            return False
        return bool(torch.isfinite(sample).all())

    if runs(requested):
        return None
    limit = min(requested - 1, int(scheduler.config.num_train_timesteps))
    while limit > 0 and not runs(limit):
        limit -= 1
    return limit


def to_uint8(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Images in [0, 1] (a float NHWC array, as pipelines return with ``output_type="np"``) -> uint8 NHWC."""
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return np.clip(np.round(array * 255), 0, 255).astype(np.uint8)


def image_grid(
    images: np.ndarray,
    columns: int | None = None,
    *,
    upscale: int = 1,
    gap: int = 2,
    gap_value: int = 128,
) -> Image.Image:
    """A PIL grid of uint8 NHWC ``images`` with ``gap`` pixels (after ``upscale``) of ``gap_value`` between them.

    ``columns`` defaults to ceil(sqrt(N)); missing cells of the last row are left at ``gap_value``.
    Nearest-neighbour upscaling keeps small images (8x8 digits) crisp.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be a uint8 array (N, H, W, 1 or 3), got {images.dtype} {images.shape}")
    count, height, width, channels = images.shape
    if upscale > 1:
        images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
        height, width = height * upscale, width * upscale
    columns = columns or int(math.ceil(math.sqrt(count)))
    rows = int(math.ceil(count / columns))
    grid = np.full(
        (rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap, channels),
        gap_value,
        dtype=np.uint8,
    )
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = row * (height + gap), column * (width + gap)
        grid[top : top + height, left : left + width] = image
    return Image.fromarray(grid[..., 0] if channels == 1 else grid)


def save_grid(images: np.ndarray, path: str, **grid_kwargs: Any) -> None:
    """Write :func:`image_grid` of ``images`` as a PNG at ``path``, atomically."""
    import io

    from .atomic import write_bytes

    buffer = io.BytesIO()
    image_grid(images, **grid_kwargs).save(buffer, format="PNG")
    write_bytes(path, buffer.getvalue())


def sample_batches(
    pipeline: Any,
    num_samples: int,
    num_inference_steps: int,
    *,
    seed: int = 0,
    batch_size: int = 256,
    scheduler: Any | None = None,
    description: str | None = None,
    **call_kwargs: Any,
) -> np.ndarray:
    """``num_samples`` outputs of ``pipeline(..., output_type="np")`` (a float array), checked to be finite.

    Samples are drawn in batches of ``batch_size``; batch k uses ``torch.Generator("cpu").manual_seed(seed +
    k * batch_size)``, so a seed fixes the samples whatever the device. ``scheduler`` (optional) replaces the
    pipeline's scheduler for this call only. Runs under ``torch.random.fork_rng``: the caller's global RNG
    stream is left as it was (a training run stays resumable).

    Raises:
        ValueError: the scheduler cannot run ``num_inference_steps`` steps (the message names its limit).
        NonFiniteSamplesError: a sample holds NaN or infinite values.
    """
    original = pipeline.scheduler
    active = scheduler if scheduler is not None else original
    label = description or type(active).__name__
    chunks = []
    with torch.random.fork_rng(devices=[]):  # the step-count probe and the pipeline may draw noise
        limit = max_inference_steps(active, num_inference_steps)
        if limit is not None:
            raise ValueError(
                f"--num_inference_steps {num_inference_steps}: {label} cannot run that many steps with this "
                f"model's {active.config.num_train_timesteps} training timesteps; use at most {limit}"
            )
        pipeline.scheduler = active
        try:
            for start in range(0, num_samples, batch_size):
                generator = torch.Generator(device="cpu").manual_seed(seed + start)
                (output,) = pipeline(
                    batch_size=min(batch_size, num_samples - start),
                    num_inference_steps=num_inference_steps,
                    generator=generator,
                    output_type="np",
                    return_dict=False,
                    **call_kwargs,
                )
                chunks.append(np.asarray(output))
        finally:
            pipeline.scheduler = original
    samples = np.concatenate(chunks)
    bad = ~np.isfinite(samples).reshape(len(samples), -1).all(axis=1)
    if bad.any():
        raise NonFiniteSamplesError(
            f"{label} with {num_inference_steps} steps produced NaN or infinite values in {int(bad.sum())} of "
            f"{len(samples)} samples; nothing was written"
        )
    return samples


def generate(pipeline: Any, num_images: int, num_inference_steps: int, **kwargs: Any) -> np.ndarray:
    """``num_images`` images from an image pipeline as uint8 NHWC, through :func:`sample_batches` (same arguments)."""
    return to_uint8(sample_batches(pipeline, num_images, num_inference_steps, **kwargs))
