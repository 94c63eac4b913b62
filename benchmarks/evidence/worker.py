"""Execute the image studies' work units (train, sample + score, K(t), mixture spread) and the worker loop."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import numpy as np
import torch

from diffusers_smd.atomic import write_json, write_npy
from diffusers_smd.lipschitz import measure_lipschitz
from diffusers_smd.sampling import make_scheduler, sample_batches, to_uint8

from .config import model_timesteps
from .data import load_split
from .mixtureness import mixture_spread
from .store import Unit, next_unit
from .training import load_trained, train_unit

__all__ = ["initial_noise_seed", "run_unit", "worker_loop", "score_images", "real_data_floor"]


@functools.lru_cache(maxsize=4)
def _split(data_items: tuple, which: str) -> torch.Tensor:
    return load_split(dict(data_items), which)


def _images(config: dict, which: str) -> torch.Tensor:
    return _split(tuple(sorted(config["data"].items())), which)


def initial_noise_seed(seed: int) -> int:
    """Seed of the sampling generator for benchmark seed ``seed``: every model of a seed starts from the same x_T."""
    return 1_000_000 + seed


def score_images(config: dict, generated: torch.Tensor) -> dict:
    """The config's metric of ``generated`` against the held-out split, at equal sample counts."""
    heldout = _images(config, "heldout")
    count = len(generated)
    if count > len(heldout):
        raise ValueError(
            f"sampling.num_samples={count} exceeds the {len(heldout)} held-out images; the metric compares "
            "equal counts"
        )
    reference = heldout[:count]
    if config["metric"] == "digits":
        from diffusers_smd.metrics import compute_digits_metrics

        result = compute_digits_metrics(generated, reference)
        generated_hist = np.asarray(result["class_histogram"])
        reference_hist = np.asarray(result["reference_class_histogram"])
        return {
            "fdd": result["frechet_digits_distance"],
            "class_histogram": result["class_histogram"],
            "reference_class_histogram": result["reference_class_histogram"],
            "class_tv_distance": 0.5 * float(np.abs(generated_hist - reference_hist).sum()),
            "classifier_confidence": result["classifier_confidence"],
        }
    from diffusers_smd.metrics import compute_fid

    return {"fid": compute_fid(generated, reference, device=config["device"])}


def real_data_floor(config: dict, draws: int = 5) -> dict:
    """The metric of REAL images: ``num_samples`` random train images vs the held-out reference.

    The best value a perfect generator can expect at this sample count (the Frechet distance is biased
    upward for small counts); ``draws`` random subsets with fixed seeds, mean and standard deviation.
    """
    train = _images(config, "train")
    count = config["sampling"]["num_samples"]
    key = "fdd" if config["metric"] == "digits" else "fid"
    values = []
    for draw in range(draws):
        index = torch.randperm(len(train), generator=torch.Generator().manual_seed(draw))[:count]
        values.append(score_images(config, train[index])[key])
    mean = float(np.mean(values))
    return {
        "metric": key,
        "num_samples": count,
        "draws": draws,
        "mean": mean,
        "std": float(np.std(values, ddof=1)),
    }


def _model_folder(work_dir: Path, unit: Unit) -> Path:
    return work_dir / "models" / unit.model_key


def _run_sample(config: dict, unit: Unit, work_dir: Path) -> None:
    pipeline, _ = load_trained(_model_folder(work_dir, unit), config["device"])
    # E-TSDM models get the E-TSDM variant of the sampler (their scheduler config records the settings)
    scheduler, resolved = make_scheduler(unit.sampler, pipeline.scheduler.config)
    sampling = config["sampling"]
    started = time.perf_counter()
    images = sample_batches(
        pipeline,
        sampling["num_samples"],
        unit.steps,
        seed=initial_noise_seed(unit.seed),
        batch_size=sampling["batch_size"],
        scheduler=scheduler,
        description=resolved,
    )
    sampling_seconds = time.perf_counter() - started
    model_range = torch.from_numpy(images).permute(0, 3, 1, 2) * 2.0 - 1.0
    scores = score_images(config, model_range)
    grids = config.get("grids") or {}
    keep = grids.get("count", 0)
    if keep:
        write_npy(unit.result_path(work_dir).with_suffix(".npy"), to_uint8(images[:keep]))
    write_json(
        unit.result_path(work_dir),
        {
            "model": unit.model,
            "seed": unit.seed,
            "sampler": unit.sampler,
            "steps": unit.steps,
            "scheduler_class": type(scheduler).__name__,
            "num_samples": len(images),
            "sampling_seconds": sampling_seconds,
            **scores,
        },
        indent=1,
        sort_keys=False,
    )


def _lipschitz_of(config: dict, pipeline, unit: Unit, work_dir: Path, label: str) -> None:
    """K(t) of ``pipeline`` on the first held-out images (the same x_0, eps and eta for every model)."""
    settings = config["lipschitz"]
    clean = _images(config, "heldout")[: settings["num_samples"]]
    result = measure_lipschitz(
        pipeline, clean, t_max=settings["t_max"], dt=settings["dt"], seed=2_000_000, model_name=label,
        data_name=f"{config['data']['dataset']} held-out",
    )  # fmt: skip
    write_json(
        unit.result_path(work_dir),
        {
            "model": unit.model,
            "seed": unit.seed,
            "step": unit.steps,
            "seconds": result.seconds,
            "k": result.to_dict(),
        },
        indent=1,
        sort_keys=False,
    )


def _run_lipschitz(config: dict, unit: Unit, work_dir: Path) -> None:
    pipeline, _ = load_trained(_model_folder(work_dir, unit), config["device"])
    _lipschitz_of(config, pipeline, unit, work_dir, unit.model_key)


def _run_lipschitz_checkpoint(config: dict, unit: Unit, work_dir: Path) -> None:
    """K(t) of the weights a training checkpoint holds (EMA weights when EMA is on, as the final model)."""
    from diffusers import UNet2DModel

    from diffusers_smd import SMDPipeline, SMDUNet2DModel

    checkpoint = work_dir / "training" / unit.model_key / f"checkpoint-{unit.steps}"
    folder = checkpoint / ("unet_ema" if (checkpoint / "unet_ema").is_dir() else "unet")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is missing: K(t) during training needs the training's checkpoints (training."
            "checkpoints_total_limit: null keeps them all)"
        )
    final, _ = load_trained(_model_folder(work_dir, unit), config["device"])
    model_class = SMDUNet2DModel if isinstance(final.unet, SMDUNet2DModel) else UNet2DModel
    unet = model_class.from_pretrained(folder).to(config["device"])
    pipeline = SMDPipeline(unet=unet, scheduler=final.scheduler)
    _lipschitz_of(config, pipeline, unit, work_dir, f"{unit.model_key} at step {unit.steps}")


def _run_mixture(config: dict, unit: Unit, work_dir: Path) -> None:
    """The spread of the component means over mixture draws at fixed x_t, against sigma_t (mixtureness.py)."""
    settings = config["mixture"]
    pipeline, _ = load_trained(_model_folder(work_dir, unit), config["device"])
    clean = _images(config, "heldout")[: settings["num_samples"]].to(config["device"])
    num_train_timesteps = model_timesteps(config, unit.model)
    # the model's own T steps (the few-step regime); 10 steps (its contrast cells) for a long schedule
    steps = num_train_timesteps if num_train_timesteps <= 100 else 10
    started = time.perf_counter()
    rows = mixture_spread(
        pipeline.unet, pipeline.scheduler, clean, steps, settings["num_draws"], seed=3_000_000
    )
    ratios = [row["ratio"] for row in rows if row["ratio"] is not None]
    write_json(
        unit.result_path(work_dir),
        {
            "model": unit.model, "seed": unit.seed, "num_train_timesteps": num_train_timesteps,
            "num_inference_steps": steps, "num_samples": len(clean), "num_draws": settings["num_draws"],
            "steps": rows, "mean_ratio": sum(ratios) / len(ratios), "seconds": time.perf_counter() - started,
        },
        indent=1,
        sort_keys=False,
    )  # fmt: skip


def run_unit(config: dict, unit: Unit, work_dir: Path) -> None:
    """Do ``unit`` and write its result file (atomically)."""
    if unit.kind == "train":
        train_unit(config, unit.model, unit.seed, _model_folder(work_dir, unit), work_dir)
    elif unit.kind == "sample":
        _run_sample(config, unit, work_dir)
    elif unit.kind == "lipschitz":
        _run_lipschitz(config, unit, work_dir)
    elif unit.kind == "lipschitz-checkpoint":
        _run_lipschitz_checkpoint(config, unit, work_dir)
    elif unit.kind == "mixture":
        _run_mixture(config, unit, work_dir)
    else:
        raise ValueError(f"unknown unit kind {unit.kind!r}")


def worker_loop(config: dict, work_dir: Path, log=print) -> int:
    """Claim and run the config's units until none is left; returns how many this process ran."""
    from .studies import study_of

    study = study_of(config)
    torch.set_num_threads(config["threads_per_worker"])
    units = study.plan_units(config)
    done = 0
    while True:
        unit, waiting = next_unit(units, work_dir)
        if unit is None:
            if not waiting:
                return done
            time.sleep(2.0)
            continue
        started = time.perf_counter()
        try:
            study.run_unit(config, unit, work_dir)
        except BaseException:
            (work_dir / "claims" / f"{unit.name}.claim").unlink(missing_ok=True)
            raise
        done += 1
        log(f"[worker {os.getpid()}] {unit.name} done in {time.perf_counter() - started:.1f} s", flush=True)
