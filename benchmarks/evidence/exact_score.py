"""E-TSDM exact-score study: Gaussian mixtures, whose noise-prediction target eps*(x, t) is known in closed form.

Data x_0 ~ sum_k w_k N(m_k, s^2 I). The forward process keeps it a mixture,

    x_t ~ sum_k w_k N(a m_k, (a^2 s^2 + sigma^2) I),      a = sqrt(abar_t), sigma = sqrt(1 - abar_t),

so the regression target of an epsilon network is exact:

    eps*(x, t) = E[eps | x_t = x] = -sigma * grad_x log p_t(x)                    (Tweedie / Vincent 2011)

For each mixture (2-D and 16-D) and spread s (from mild to severe: the smaller s, the steeper eps* near
t = 0), a plain MLP (``SMDVectorModel(use_mixture=False)``) is trained by the package's training engine
with and without E-TSDM for every seed. Each trained model is then measured against the exact target:
K(t) next to the exact K(t) (:func:`diffusers_smd.lipschitz.measure_lipschitz`), its error against eps*,
and sample quality (sliced Wasserstein-2 to exact samples and the mode-weight total variation) for DDIM,
DPM-Solver++, Euler and UniPC at several step counts, all sampled through ``SMDVectorPipeline``. The exact
eps*, wrapped as a model (:class:`ExactEpsilonModel`), is measured the same way as a reference.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from diffusers import DDPMScheduler

from diffusers_smd import SMDVectorModel, SMDVectorPipeline
from diffusers_smd.atomic import replace_folder, write_json
from diffusers_smd.dilation import GaussianMixture, mode_weight_tv, sliced_wasserstein2
from diffusers_smd.lipschitz import measure_lipschitz
from diffusers_smd.sampling import make_scheduler, sample_batches
from diffusers_smd.schedulers import ETSDMDDPMScheduler

from .store import Unit

__all__ = [
    "LAYOUTS",
    "ExactEpsilonModel",
    "build_mixture",
    "exact_epsilon",
    "groups",
    "noise_scheduler",
    "plan_units",
    "run_unit",
    "validate",
]

LAYOUTS = ("grid3x3", "random8")
SAMPLERS = ("ddim", "dpmsolver++", "euler", "unipc")
_TOP_KEYS = {
    "study", "workers", "threads_per_worker", "seeds", "mixtures", "spreads", "models", "network",
    "noise_schedule", "etsdm", "training", "num_train_samples", "sampling", "lipschitz", "target_error",
    "output_dir", "work_dir", "quick", "device", "title",
}  # fmt: skip


# -- the data and the exact target ------------------------------------------------------------------------
def build_mixture(layout: str, dim: int, spread: float) -> GaussianMixture:
    """The study's mixture: ``grid3x3`` (2-D, modes at {-1, 0, 1}^2) or ``random8`` (8 modes 0.35 N(0, I_dim),
    fixed seed); unequal weights proportional to 1, ..., 3 (evenly spaced); every component s^2 I."""
    if layout == "grid3x3":
        if dim != 2:
            raise ValueError(f"layout grid3x3 is 2-D, got dim {dim}")
        axis = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
        means = torch.cartesian_prod(axis, axis)
    elif layout == "random8":
        means = 0.35 * torch.randn(8, dim, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)
    else:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    weights = torch.linspace(1.0, 3.0, len(means), dtype=torch.float64)
    return GaussianMixture(means, weights, spread**2)


def noised_mixture(mixture: GaussianMixture, alpha_bar: float) -> GaussianMixture:
    """The law of x_t: sum_k w_k N(a m_k, (a^2 s_k^2 + 1 - abar) I) for isotropic components s_k^2 I."""
    variances = mixture.covariances.diagonal(dim1=-2, dim2=-1).mean(-1)
    return GaussianMixture(
        math.sqrt(alpha_bar) * mixture.means, mixture.weights, alpha_bar * variances + 1.0 - alpha_bar
    )


def exact_epsilon(mixture: GaussianMixture, x: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """eps*(x, t) = -sqrt(1 - abar_t) grad log p_t(x), the exact minimiser of the epsilon objective at t."""
    return -math.sqrt(1.0 - alpha_bar) * noised_mixture(mixture, alpha_bar).score(x.double()).to(x.dtype)


def alpha_bar_at(alphas_cumprod: torch.Tensor, t: float) -> float:
    """abar at a possibly fractional t, interpolating sigma = sqrt((1 - abar) / abar) linearly in t as diffusers'
    Euler-family schedulers do; exact at integer t."""
    sigmas = ((1.0 - alphas_cumprod.double()) / alphas_cumprod.double()).sqrt().numpy()
    sigma = float(np.interp(float(t), np.arange(len(sigmas)), sigmas))
    return 1.0 / (1.0 + sigma * sigma)


class ExactEpsilonModel(SMDVectorModel):
    """eps*(x, t) of a Gaussian mixture as a denoiser that ``SMDVectorPipeline`` drives like a trained one.

    A reference, not a network: the inherited layers are a one-unit placeholder (ModelMixin needs a
    parameter for its device / dtype); ``forward`` returns the closed form.
    """

    def __init__(self, mixture: GaussianMixture, alphas_cumprod: torch.Tensor):
        super().__init__(data_dim=mixture.dim, hidden_dim=1, num_layers=1, use_mixture=False)
        self.mixture, self.schedule = mixture, alphas_cumprod.detach().double().cpu()

    def forward(self, sample: torch.Tensor, timestep, return_dict: bool = True):
        timesteps = torch.as_tensor(timestep).flatten()
        if not bool((timesteps == timesteps[0]).all()):
            raise ValueError("ExactEpsilonModel takes one timestep per call")
        output = exact_epsilon(self.mixture, sample, alpha_bar_at(self.schedule, float(timesteps[0])))
        return SimpleNamespace(sample=output) if return_dict else (output,)


def noise_scheduler(config: dict, etsdm: bool):
    """The training noise scheduler: DDPM (no x_0 clipping: mixture data is unbounded), E-TSDM DDPM when ``etsdm``."""
    base = DDPMScheduler(
        num_train_timesteps=config["noise_schedule"]["num_train_timesteps"],
        beta_schedule=config["noise_schedule"]["beta_schedule"],
        prediction_type="epsilon",
        clip_sample=False,
        # explicit, as a saved config records it: samplers built with from_config then inherit it (a default
        # left implicit is not passed on, so the reference's Euler would space its steps differently)
        timestep_spacing="leading",
    )
    if not etsdm:
        return base
    settings = config["etsdm"]
    return ETSDMDDPMScheduler.from_config(
        base.config, etsdm_threshold=settings["threshold"], etsdm_intervals=settings["intervals"]
    )


# -- config and units -----------------------------------------------------------------------------------------
def groups(config: dict) -> list[tuple[str, str, int, float]]:
    """(group name, layout, dim, spread) of every (mixture, spread) pair, e.g. ``("16d-s0.03", "random8", 16, 0.03)``."""
    return [
        (f"{name}-s{spread:g}", spec["layout"], spec["dim"], spread)
        for name, spec in config["mixtures"].items()
        for spread in config["spreads"]
    ]


def validate(config: dict) -> None:
    """Raise ValueError naming the key for anything missing or out of range (before any work)."""
    unknown = sorted(set(config) - _TOP_KEYS - {"profile", "config_file"})
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; allowed: {sorted(_TOP_KEYS)}")
    missing = sorted(_TOP_KEYS - {"quick", "device", "target_error", "title"} - set(config))
    if missing:
        raise ValueError(f"config is missing keys {missing}")
    for name, spec in config["mixtures"].items():
        if not isinstance(spec, dict) or set(spec) != {"layout", "dim"}:
            raise ValueError(f"mixtures.{name} must be {{layout, dim}}, got {spec!r}")
        build_mixture(spec["layout"], spec["dim"], 0.1)
    if not config["spreads"] or not all(isinstance(s, (int, float)) and s > 0 for s in config["spreads"]):
        raise ValueError(f"spreads must be a non-empty list of positive numbers, got {config['spreads']!r}")
    if set(config["models"]) != {"vanilla", "etsdm"}:
        raise ValueError(f"models must be exactly vanilla and etsdm, got {sorted(config['models'])}")
    if len(config["seeds"]) < 2 or len(set(config["seeds"])) != len(config["seeds"]):
        raise ValueError(
            f"seeds must list at least 2 different seeds (a CI needs them), got {config['seeds']!r}"
        )
    sampling = config["sampling"]
    bad = [s for s in sampling.get("samplers", []) if s not in SAMPLERS]
    if bad or not sampling.get("samplers"):
        raise ValueError(f"sampling.samplers must be some of {SAMPLERS}, got {sampling.get('samplers')!r}")
    lipschitz = config["lipschitz"]
    if lipschitz["t_max"] + lipschitz["dt"] > config["noise_schedule"]["num_train_timesteps"] - 1:
        raise ValueError("lipschitz.t_max + lipschitz.dt must be below noise_schedule.num_train_timesteps")
    from diffusers_smd.training import TrainingConfig

    try:
        TrainingConfig(**config["training"]).validate()
    except TypeError as error:
        raise ValueError(f"training: {error}; use field names of TrainingConfig") from None
    except ValueError as error:
        raise ValueError(f"training: {error}") from None


def plan_units(config: dict) -> list[Unit]:
    """A reference unit per group (exact K(t), exact-score sampling), then one unit per (group, seed, model)
    (train + measure), seed-major so every group's first seeds finish early."""
    units = [Unit("reference", "exact", 0, group=group) for group, *_ in groups(config)]
    units += [
        Unit("exact", model, seed, group=group)
        for seed in config["seeds"]
        for group, *_ in groups(config)
        for model in config["models"]
    ]
    return units


def _group_spec(config: dict, group: str) -> tuple[GaussianMixture, int]:
    for name, layout, dim, spread in groups(config):
        if name == group:
            return build_mixture(layout, dim, spread), dim
    raise ValueError(f"unknown group {group!r}")


def _reference_samples(mixture: GaussianMixture, count: int) -> torch.Tensor:
    return mixture.sample(count, torch.Generator().manual_seed(10_000)).float()


def _lipschitz_clean(mixture: GaussianMixture, count: int) -> torch.Tensor:
    return mixture.sample(count, torch.Generator().manual_seed(20_000)).float()


def _sample_quality(config: dict, pipeline, mixture: GaussianMixture, seed: int) -> list[dict]:
    """SW2 and mode-weight TV of every (sampler, steps) cell; same initial noise for every model of a seed."""
    sampling = config["sampling"]
    reference = _reference_samples(mixture, sampling["num_samples"])
    cells = []
    for sampler in sampling["samplers"]:
        for steps in sampling["steps"]:
            scheduler, resolved = make_scheduler(sampler, pipeline.scheduler.config)
            started = time.perf_counter()
            samples = torch.from_numpy(
                sample_batches(pipeline, sampling["num_samples"], steps, seed=1_000_000 + seed,
                               batch_size=sampling["num_samples"], scheduler=scheduler, description=resolved)
            )  # fmt: skip
            cells.append(
                {
                    "sampler": sampler,
                    "steps": steps,
                    "scheduler_class": type(scheduler).__name__,
                    "sw2": sliced_wasserstein2(
                        samples, reference, generator=torch.Generator().manual_seed(0)
                    ),
                    "mode_tv": mode_weight_tv(mixture.mode_weights_of(samples.double()), mixture.weights),
                    "seconds": time.perf_counter() - started,
                }
            )
    return cells


def _target_error(config: dict, model, scheduler, mixture: GaussianMixture) -> dict:
    """RMS per coordinate of eps_theta(x_t, c(t)) - eps*(x_t, t) over noisy exact samples, at a few t."""
    settings = config.get("target_error") or {
        "timesteps": [0, 1, 2, 5, 10, 20, 50, 100, 200, 500],
        "num_samples": 512,
    }
    clean = _lipschitz_clean(mixture, settings["num_samples"])
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(30_000))
    condition = getattr(scheduler, "condition_timesteps", None)
    errors = []
    with torch.no_grad():
        for t in settings["timesteps"]:
            alpha_bar = float(scheduler.alphas_cumprod[t])
            x_t = math.sqrt(alpha_bar) * clean + math.sqrt(1 - alpha_bar) * noise
            c = int(condition(t)) if condition is not None else t
            predicted = model(x_t, torch.tensor(c)).sample
            exact = exact_epsilon(mixture, x_t, alpha_bar)
            errors.append(float(((predicted - exact) ** 2).mean().sqrt()))
    return {"timesteps": list(settings["timesteps"]), "rms_error": errors}


def _lipschitz(config: dict, pipeline, mixture: GaussianMixture, label: str) -> dict:
    settings = config["lipschitz"]
    clean = _lipschitz_clean(mixture, settings["num_samples"])
    result = measure_lipschitz(pipeline, clean, t_max=settings["t_max"], dt=settings["dt"], seed=0, model_name=label,
                               data_name="exact mixture samples")  # fmt: skip
    return result.to_dict()


def _train(config: dict, group: str, model_name: str, seed: int, folder: Path, work_dir: Path) -> dict:
    """Train one MLP with the package's engine (resuming its latest checkpoint) and publish ``folder``."""
    import shutil

    from diffusers_smd.training import InMemoryTask, TrainingConfig, train

    mixture, dim = _group_spec(config, group)
    etsdm = config["models"][model_name]["etsdm"]
    training_dir = work_dir / "training" / f"{group}-{model_name}-seed{seed}"
    settings = dict(config["training"])
    if etsdm:
        settings.update(etsdm=True, etsdm_threshold=config["etsdm"]["threshold"],
                        etsdm_intervals=config["etsdm"]["intervals"])  # fmt: skip
    training = TrainingConfig(
        **settings, objective="vanilla", output_dir=str(training_dir), seed=seed, resume_from_checkpoint="latest",
        checkpoints_total_limit=1,
    )  # fmt: skip
    torch.manual_seed(seed)  # same seed, same initial weights for both models
    model = SMDVectorModel(data_dim=dim, use_mixture=False, **config["network"])
    data = mixture.sample(config["num_train_samples"], torch.Generator().manual_seed(seed)).float()
    task = InMemoryTask(training, model, noise_scheduler(config, etsdm), data, dataset_name=group,
                        pipeline_class=SMDVectorPipeline)  # fmt: skip
    summary = train(training, task).to_dict()
    replace_folder(
        lambda tmp: shutil.copytree(training_dir, tmp, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("checkpoint-*", "logs", "samples")),
        folder,
    )  # fmt: skip
    return summary


def run_unit(config: dict, unit: Unit, work_dir: Path) -> None:
    """Do ``unit`` and write its result file atomically."""
    mixture, dim = _group_spec(config, unit.group)
    T = config["noise_schedule"]["num_train_timesteps"]
    started = time.perf_counter()
    if unit.kind == "reference":
        schedule = noise_scheduler(config, etsdm=False)
        exact = ExactEpsilonModel(mixture, schedule.alphas_cumprod)
        pipeline = SMDVectorPipeline(unet=exact, scheduler=schedule)
        pipeline.set_progress_bar_config(disable=True)
        floor = sliced_wasserstein2(
            mixture.sample(config["sampling"]["num_samples"], torch.Generator().manual_seed(7)).float(),
            _reference_samples(mixture, config["sampling"]["num_samples"]),
            generator=torch.Generator().manual_seed(0),
        )
        result = {
            "group": unit.group, "model": "exact", "lipschitz": _lipschitz(config, pipeline, mixture, "exact eps*"),
            "cells": _sample_quality(config, pipeline, mixture, seed=0), "exact_vs_exact_sw2": floor,
            "num_train_timesteps": T,
        }  # fmt: skip
    elif unit.kind == "exact":
        folder = work_dir / "models" / f"{unit.group}-{unit.model}-seed{unit.seed}"
        summary = _train(config, unit.group, unit.model, unit.seed, folder, work_dir)
        trained_seconds = time.perf_counter() - started
        pipeline = SMDVectorPipeline.from_pretrained(folder)
        pipeline.set_progress_bar_config(disable=True)
        etsdm = config["models"][unit.model]["etsdm"]
        result = {
            "group": unit.group, "model": unit.model, "seed": unit.seed, "etsdm": etsdm,
            "final_loss": summary["final_loss"], "train_seconds": trained_seconds,
            "parameters": summary["parameter_counts"]["total"],
            "lipschitz": _lipschitz(config, pipeline, mixture, unit.model_key),
            "target_error": _target_error(config, pipeline.unet, pipeline.scheduler, mixture),
            "cells": _sample_quality(config, pipeline, mixture, unit.seed),
        }  # fmt: skip
    else:
        raise ValueError(f"unknown unit kind {unit.kind!r}")
    result["seconds"] = time.perf_counter() - started
    write_json(unit.result_path(work_dir), result, indent=1, sort_keys=False)


def load_results(config: dict, work_dir: Path) -> tuple[list[dict], list[dict]]:
    """(reference results, model results) of every unit of ``config`` (raises if one is missing)."""
    units = plan_units(config)
    missing = [u.name for u in units if not u.result_path(work_dir).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} units have no result yet (first: {missing[0]}); run the study first"
        )
    loaded = [(u, json.loads(u.result_path(work_dir).read_text())) for u in units]
    return [r for u, r in loaded if u.kind == "reference"], [r for u, r in loaded if u.kind == "exact"]
