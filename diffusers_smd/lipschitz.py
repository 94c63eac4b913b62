"""K(t): how fast a diffusion model's noise prediction changes with t (the E-TSDM paper's Lipschitz estimate).

    K(t) = E_{x_0, eps} || eps_hat(x_t, t) - eps_hat(x_t, t + dt) ||_2 / dt,
    x_t  = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                       (Yang et al., ICLR 2024)

* The SAME x_t, built at the real t from clean samples x_0 and fixed noise eps, enters both calls, so K
  measures the dependence on t alone.
* eps_hat(x, t) is the noise prediction the samplers use: the network is queried at its time condition
  c(t) (E-TSDM's shared f(t) when the model's scheduler config records E-TSDM settings, else t), and an
  ``v_prediction`` or ``sample`` output is converted to epsilon with the real t's abar
  (:func:`diffusers_smd.losses.gaussian_steps.noise_from_prediction`). For an epsilon model that is
  exactly the paper's quantity.
* An SMD model gets one fixed mixture noise eta per example, the same at every t, so K does not count
  the mixture's randomness.
* The norm is the Euclidean norm over all coordinates of one example; E is the mean over examples.

:func:`lipschitz_in_t` is the pure core (any ``predict(x_t, condition) -> output``); :func:`measure_lipschitz`
applies it to a saved pipeline and returns a :class:`LipschitzResult` that writes JSON and plots;
:func:`load_clean_samples` reads x_0 from the built-in digits, a Hub data set, an image folder or a tensor
file. ``diffusers-smd lipschitz`` is the command-line adapter.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .losses.gaussian_steps import PREDICTION_TYPES, noise_from_prediction

__all__ = [
    "LipschitzResult",
    "lipschitz_in_t",
    "load_clean_samples",
    "measure_lipschitz",
    "model_sample_shape",
    "noisy_samples",
    "plot_lipschitz",
]

TENSOR_SUFFIXES = (".npy", ".safetensors")


def noisy_samples(
    clean: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, t: int
) -> torch.Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, the DDPM forward process at integer timestep t."""
    alpha_bar = alphas_cumprod[t].to(clean.dtype)
    return alpha_bar.sqrt() * clean + (1.0 - alpha_bar).sqrt() * noise


@torch.no_grad()
def lipschitz_in_t(
    predict: Callable[[torch.Tensor, int], torch.Tensor],
    clean: torch.Tensor,
    noise: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    dt: int = 1,
    condition: Callable[[int], int] | None = None,
    prediction_type: str = "epsilon",
) -> list[float]:
    """K(t) for each t of ``timesteps`` (floats, same order); see the module docstring.

    Args:
        predict: ``predict(x_t, condition_timestep) -> model output`` (batched, deterministic).
        clean, noise: x_0 and eps, (N, ...) each.
        alphas_cumprod: the schedule's abar, indexed by integer t (t + dt must be a valid index).
        dt: the timestep difference (a positive integer).
        condition: real t -> the network's time condition (identity when None).
        prediction_type: what ``predict`` returns; converted to epsilon with the real t's abar.
            When c(t) = c(t + dt) the network is called once; for epsilon models K(t) is then 0 exactly.
    """
    if isinstance(dt, bool) or not isinstance(dt, int) or dt < 1:
        raise ValueError(f"dt must be a positive integer, got {dt!r}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    condition = condition if condition is not None else (lambda t: t)
    values = []
    for t in timesteps:
        t = int(t)
        c_here, c_next = int(condition(t)), int(condition(t + dt))
        if c_here == c_next and prediction_type == "epsilon":
            values.append(0.0)
            continue
        x_t = noisy_samples(clean, noise, alphas_cumprod, t)
        out_here = predict(x_t, c_here)
        out_next = out_here if c_next == c_here else predict(x_t, c_next)
        eps_here = noise_from_prediction(out_here, x_t, alphas_cumprod[t], prediction_type)
        eps_next = noise_from_prediction(out_next, x_t, alphas_cumprod[t + dt], prediction_type)
        values.append((eps_here - eps_next).flatten(1).norm(dim=1).mean().item() / dt)
    return values


@dataclass
class LipschitzResult:
    """K(t) of one model: ``values[i]`` is K at ``timesteps[i]``. Writes JSON (:meth:`save`) and plots (:meth:`plot`)."""

    timesteps: list[int]
    values: list[float]
    dt: int
    num_samples: int
    seed: int
    prediction_type: str
    num_train_timesteps: int
    #: E-TSDM settings the model was queried with, ``{"threshold": .., "intervals": ..}``; None without E-TSDM.
    etsdm: dict[str, int | float] | None = None
    fixed_mixture_noise: bool = False
    model: str | None = None
    data: str | None = None
    seconds: float | None = None
    quantity: str = field(
        default="K(t) = E ||eps_hat(x_t, c(t)) - eps_hat(x_t, c(t + dt))||_2 / dt, x_t built at the real t"
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LipschitzResult:
        return cls(**data)

    def save(self, path: str | os.PathLike) -> None:
        """Write the result as JSON at ``path`` (atomically)."""
        from .atomic import write_json

        write_json(path, self.to_dict(), indent=1, sort_keys=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LipschitzResult:
        from .atomic import read_json

        return cls.from_dict(read_json(path))

    def mean(self, t_min: int | None = None, t_max: int | None = None) -> float:
        """Mean K over the measured t with t_min <= t < t_max (NaN when none is in range)."""
        chosen = [
            value
            for t, value in zip(self.timesteps, self.values)
            if (t_min is None or t >= t_min) and (t_max is None or t < t_max)
        ]
        return sum(chosen) / len(chosen) if chosen else math.nan

    def peak(self) -> tuple[int, float]:
        """(t, K) where K is largest."""
        index = max(range(len(self.values)), key=self.values.__getitem__)
        return self.timesteps[index], self.values[index]

    def plot(self, path: str | os.PathLike, label: str | None = None) -> None:
        """A PNG of this K(t) (log scale); see :func:`plot_lipschitz`."""
        plot_lipschitz({label or self.model or "model": self}, path)


def plot_lipschitz(
    curves: dict[str, LipschitzResult | Sequence[LipschitzResult]],
    path: str | os.PathLike | None = None,
    *,
    axis: Any = None,
    title: str | None = None,
) -> Any:
    """Plot K(t) curves on a log scale: ``{label: result or list of results (seeds)}``.

    A list is drawn as its mean with a min-max band. Where K is 0 (inside E-TSDM's shared intervals, not
    drawable on a log axis) the non-zero points are drawn as markers and the label says "0 elsewhere".
    Writes a PNG to ``path`` when given (atomically); returns the matplotlib axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure = None
    if axis is None:
        figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, runs in curves.items():
        runs = [runs] if isinstance(runs, LipschitzResult) else list(runs)
        ts = np.asarray(runs[0].timesteps)
        k = np.asarray([run.values for run in runs])
        mean = k.mean(axis=0)
        positive = mean > 0
        if len(runs) > 1:
            label = f"{label} ({len(runs)} seeds)"
        if positive.all():
            (line,) = axis.plot(ts, mean, label=label)
        else:
            (line,) = axis.plot(
                ts[positive], mean[positive], "o", markersize=3, label=f"{label}; 0 elsewhere"
            )
        if len(runs) > 1:
            lo, hi = k.min(axis=0), k.max(axis=0)
            band = (lo > 0) & positive
            axis.fill_between(ts[band], lo[band], hi[band], color=line.get_color(), alpha=0.2, linewidth=0)
    axis.set_yscale("log")
    axis.set_xlabel("timestep t")
    axis.set_ylabel("K(t)")
    first = next(iter(curves.values()))
    first = first if isinstance(first, LipschitzResult) else first[0]
    axis.set_title(
        title or f"Lipschitz constant in t (dt = {first.dt}, {first.num_samples} samples)", fontsize=9
    )
    axis.legend(fontsize=7)
    if figure is not None:
        figure.tight_layout()
        if path is not None:
            import io

            from .atomic import write_bytes

            buffer = io.BytesIO()
            figure.savefig(buffer, format="png")
            write_bytes(path, buffer.getvalue())
        plt.close(figure)
    return axis


def _check_timesteps(t_min: int, t_max: int, dt: int, stride: int, num_train_timesteps: int) -> list[int]:
    for name, value, low in (
        ("t_min", t_min, 0),
        ("t_max", t_max, 0),
        ("dt", dt, 1),
        ("t_stride", stride, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if t_min > t_max:
        raise ValueError(f"t_min ({t_min}) must not exceed t_max ({t_max})")
    if t_max + dt > num_train_timesteps - 1:
        raise ValueError(
            f"t_max + dt must be at most num_train_timesteps - 1 = {num_train_timesteps - 1} (the model's last "
            f"timestep), got t_max={t_max}, dt={dt}"
        )
    return list(range(t_min, t_max + 1, stride))


@torch.no_grad()
def measure_lipschitz(
    pipeline: Any,
    clean: torch.Tensor,
    *,
    t_max: int = 200,
    t_min: int = 0,
    dt: int = 1,
    t_stride: int = 1,
    num_samples: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    model_name: str | None = None,
    data_name: str | None = None,
) -> LipschitzResult:
    """K(t) for t = t_min, t_min + t_stride, ..., <= t_max of a pipeline's denoiser (``pipeline.unet``).

    ``pipeline`` is any object with ``unet`` and ``scheduler`` (a saved :class:`~diffusers_smd.SMDPipeline`,
    :class:`~diffusers_smd.SMDVectorPipeline` or a stock ``DDPMPipeline``). Its scheduler config gives the
    noise schedule (the scheduler's ``alphas_cumprod``, else ``DDPMScheduler.from_config``'s), the prediction type and the
    E-TSDM settings (the network is queried at f(t) when the config records them). ``clean`` holds x_0
    in the model's data range, (N, ...) with the model's sample shape; the first ``num_samples`` are used.
    eps (and, for SMD models, the mixture noise eta) are drawn once from ``seed``. Batches of
    ``batch_size`` keep the memory bounded; K is the mean over all examples.
    """
    import time

    from diffusers import DDPMScheduler

    from .models import accepts_mixture_noise
    from .schedulers import etsdm_settings_from_config

    model, scheduler_config = pipeline.unet, pipeline.scheduler.config
    num_train_timesteps = int(scheduler_config["num_train_timesteps"])
    timesteps = _check_timesteps(t_min, t_max, dt, t_stride, num_train_timesteps)
    prediction_type = scheduler_config.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"the model's prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}; K(t) needs a "
            "noise prediction"
        )
    if (
        not isinstance(clean, torch.Tensor)
        or not clean.is_floating_point()
        or clean.ndim < 2
        or not len(clean)
    ):
        raise ValueError("clean samples must be a non-empty floating-point tensor (N, ...)")
    if num_samples is not None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        if num_samples > len(clean):
            raise ValueError(f"num_samples={num_samples} exceeds the {len(clean)} clean samples given")
        clean = clean[:num_samples]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    device, dtype = model.device, model.dtype
    clean = clean.to(device=device, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(clean.shape, generator=generator).to(device=device, dtype=dtype)
    mixture = accepts_mixture_noise(model)
    eta = torch.randn(clean.shape, generator=generator).to(device=device, dtype=dtype) if mixture else None
    schedule = getattr(pipeline.scheduler, "alphas_cumprod", None)
    if schedule is None:  # the DDPM family's abar from the config (E-TSDM keys are not DDPM's)
        plain = {key: value for key, value in scheduler_config.items() if not key.startswith("etsdm_")}
        schedule = DDPMScheduler.from_config(plain).alphas_cumprod
    alphas_cumprod = torch.as_tensor(schedule).to(device=device, dtype=dtype)
    settings = etsdm_settings_from_config(scheduler_config)
    condition = (lambda t: int(settings.condition_timesteps(t))) if settings is not None else None
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    totals = [0.0] * len(timesteps)
    try:
        for start in range(0, len(clean), batch_size):
            chunk = slice(start, start + batch_size)
            chunk_eta = eta[chunk] if eta is not None else None

            def predict(x: torch.Tensor, t: int, chunk_eta=chunk_eta) -> torch.Tensor:
                timestep = torch.tensor(t, device=device)
                if chunk_eta is not None:
                    return model(x, timestep, mixture_noise=chunk_eta).sample
                return model(x, timestep).sample

            values = lipschitz_in_t(
                predict, clean[chunk], noise[chunk], alphas_cumprod, timesteps, dt, condition, prediction_type
            )
            count = len(clean[chunk])
            totals = [total + value * count for total, value in zip(totals, values)]
    finally:
        model.train(was_training)
    return LipschitzResult(
        timesteps=timesteps,
        values=[total / len(clean) for total in totals],
        dt=dt,
        num_samples=len(clean),
        seed=seed,
        prediction_type=prediction_type,
        num_train_timesteps=num_train_timesteps,
        etsdm={"threshold": settings.threshold, "intervals": settings.intervals} if settings else None,
        fixed_mixture_noise=mixture,
        model=model_name,
        data=data_name,
        seconds=round(time.perf_counter() - started, 3),
    )


def model_sample_shape(pipeline: Any) -> tuple[int, ...]:
    """The shape of one sample of ``pipeline``'s denoiser, without the batch dimension: (C, H, W) or (D,)."""
    if hasattr(pipeline, "_sample_shape"):  # SMDPipeline, SMDVectorPipeline
        return tuple(pipeline._sample_shape(1)[1:])
    config = pipeline.unet.config
    size = config["sample_size"]
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return (int(config["in_channels"]), int(height), int(width))


def _load_tensor_file(path: str) -> torch.Tensor:
    if path.endswith(".npy"):
        import numpy as np

        array = np.load(path, allow_pickle=False)
        if not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"--data {path!r}: the array must hold numbers, got dtype {array.dtype}")
        return torch.from_numpy(array.astype("float32", copy=False))
    from safetensors.torch import load_file

    tensors = load_file(path)
    if len(tensors) != 1:
        raise ValueError(
            f"--data {path!r}: the safetensors file must hold exactly one tensor, got {sorted(tensors)}"
        )
    return next(iter(tensors.values())).float()


def load_clean_samples(
    source: str | torch.Tensor,
    sample_shape: Sequence[int],
    *,
    num_samples: int | None = None,
) -> torch.Tensor:
    """Clean samples x_0 (N, *sample_shape) for :func:`measure_lipschitz`.

    ``source``: a tensor; a ``.npy`` / ``.safetensors`` file holding one array (taken as it is: in the
    model's data range); an image folder; or a data set name (``digits``, the built-in digits, or a Hub /
    local data set). Images are read by :func:`diffusers_smd.data.load_training_images` at the model's
    resolution and channels, in [-1, 1], centre-cropped. ``sample_shape`` is the model's sample shape
    without the batch dimension ((C, H, W) or (D,)); a source of another shape is refused, naming both.
    """
    sample_shape = tuple(int(s) for s in sample_shape)
    if isinstance(source, torch.Tensor):
        samples, name = source.float(), "tensor"
    elif not isinstance(source, str) or not source:
        raise ValueError(f"--data must be a data set name, an image folder or a tensor file, got {source!r}")
    else:
        path = os.path.expanduser(source)
        if path.endswith(TENSOR_SUFFIXES):
            if not os.path.isfile(path):
                raise ValueError(f"--data {source!r}: no such file")
            samples, name = _load_tensor_file(path), source
        else:
            if len(sample_shape) != 3 or sample_shape[1] != sample_shape[2]:
                raise ValueError(
                    f"--data {source!r} names images, but the model's samples have shape {sample_shape} (not square "
                    f"images); give a {' or '.join(TENSOR_SUFFIXES)} file of shape (N, {', '.join(map(str, sample_shape))})"
                )
            from .data import load_training_images

            folder = os.path.isdir(path)
            images = load_training_images(
                dataset_name=None if folder else source,
                train_data_dir=path if folder else None,
                resolution=sample_shape[1],
                num_channels=sample_shape[0],
                center_crop=True,
                max_samples=num_samples,
            )
            count = len(images) if num_samples is None else min(num_samples, len(images))
            samples = torch.stack([images[i]["input"] for i in range(count)]) if count else torch.empty(0)
            name = source
    if samples.ndim < 2 or tuple(samples.shape[1:]) != sample_shape:
        raise ValueError(
            f"--data {name!r}: samples of shape {tuple(samples.shape[1:])}, but the model takes {sample_shape}"
        )
    if not len(samples):
        raise ValueError(f"--data {name!r} holds no samples")
    if num_samples is not None:
        if num_samples > len(samples):
            raise ValueError(
                f"--num_samples {num_samples} exceeds the {len(samples)} samples of --data {name!r}"
            )
        samples = samples[:num_samples]
    if not torch.isfinite(samples).all():
        raise ValueError(f"--data {name!r} holds NaN or infinite values")
    return samples.contiguous()
