"""The benchmark's one settings file (YAML or JSON): loading, the ``quick`` overlay, validation.

Every setting of a run lives in one file (``digits_cpu.yaml``, ``cifar10_gpu.yaml``); the driver has no
other knobs. A top-level ``quick`` mapping is deep-merged over the file by ``--quick`` (a seconds-long
smoke run that writes elsewhere). Validation happens before any work and names the offending key.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

__all__ = [
    "SAMPLER_NAMES",
    "METRICS",
    "load_config",
    "validate_config",
    "deep_merge",
    "sampler_cells",
]

#: Samplers of the benchmark: DDIM (eta 0), DPM-Solver++ (2nd order, multistep), DDPM ancestral.
SAMPLER_NAMES = ("ddim", "dpmsolver++", "ddpm")
#: "digits": Frechet digits distance + class histogram (built-in digits); "fid": Inception FID.
METRICS = ("digits", "fid")

_TOP_KEYS = {
    "data", "metric", "device", "threads_per_worker", "workers", "seeds", "models", "smd_objective",
    "unet", "smd", "noise_schedule", "etsdm", "training", "sampling", "lipschitz", "grids",
    "output_dir", "work_dir", "quick", "launcher",
}  # fmt: skip
_SECTION_KEYS = {
    "data": {"dataset", "resolution", "channels", "train_split", "heldout_split", "image_column", "data_dir",
             "max_train_images"},
    "noise_schedule": {"num_train_timesteps", "beta_schedule", "prediction_type"},
    "etsdm": {"threshold", "intervals"},
    "sampling": {"num_samples", "batch_size", "samplers"},
    "lipschitz": {"models", "seeds", "t_max", "dt", "num_samples"},
    "grids": {"cells", "seed", "count"},
    "smd": {"latent_dim", "num_hypernet_layers", "identifier_block_out_channels"},
}  # fmt: skip
_MODEL_KEYS = {"smd", "etsdm"}


def deep_merge(base: dict, overlay: dict) -> dict:
    """A copy of ``base`` with ``overlay`` merged in: mappings recursively, anything else replaced."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read(path: Path) -> dict:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"config must be a .yaml, .yml or .json file, got {path.name!r}")
    if not isinstance(data, dict):
        raise ValueError(f"config {path} must hold a mapping at the top level")
    return data


def load_config(path: str | Path, quick: bool = False) -> dict:
    """Read, overlay ``quick`` (when asked) and validate a benchmark config; returns a plain dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path} does not exist")
    raw = _read(path)
    overlay = raw.pop("quick", None) or {}
    if quick and not overlay:
        raise ValueError(f"--quick needs a `quick:` section in {path}")
    config = deep_merge(raw, overlay) if quick else raw
    config.pop("quick", None)
    validate_config(config)
    config["profile"] = "quick" if quick else "full"
    config["config_file"] = str(path)
    return config


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _int_list(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{name} must be a non-empty list of integers, got {value!r}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise ValueError(f"{name} must hold non-negative integers, got {item!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{name} must not repeat values, got {value!r}")
    return value


def validate_config(config: dict) -> None:
    """Raise ValueError naming the key for anything missing, unknown or out of range."""
    unknown = sorted(set(config) - _TOP_KEYS - {"profile", "config_file"})
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; allowed: {sorted(_TOP_KEYS)}")
    required = _TOP_KEYS - {"quick", "grids", "lipschitz", "smd", "launcher"}
    missing = sorted(k for k in required if k not in config)
    if missing:
        raise ValueError(f"config is missing keys {missing}")
    for section, allowed in _SECTION_KEYS.items():
        value = config.get(section)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ValueError(f"{section} must be a mapping, got {type(value).__name__}")
        extra = sorted(set(value) - allowed)
        if extra:
            raise ValueError(f"unknown keys {extra} in `{section}`; allowed: {sorted(allowed)}")

    launcher = config.get("launcher")
    if launcher is not None and (
        not isinstance(launcher, list) or not all(isinstance(a, str) for a in launcher)
    ):
        raise ValueError(f"launcher must be a list of strings (e.g. [accelerate, launch]), got {launcher!r}")
    if config["metric"] not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {config['metric']!r}")
    if config["metric"] == "digits" and config["data"].get("dataset") != "digits":
        raise ValueError("metric `digits` needs data.dataset `digits`; use metric `fid` for other data sets")
    if config["device"] not in ("cpu", "cuda") and not str(config["device"]).startswith("cuda:"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {config['device']!r}")
    _positive_int(config["threads_per_worker"], "threads_per_worker")
    _positive_int(config["workers"], "workers")
    _int_list(config["seeds"], "seeds")
    for key in ("resolution", "channels"):
        _positive_int(config["data"].get(key), f"data.{key}")

    models = config["models"]
    if not isinstance(models, dict) or not models:
        raise ValueError("models must be a non-empty mapping name -> {smd: bool, etsdm: bool}")
    for name, spec in models.items():
        if (
            not isinstance(spec, dict)
            or set(spec) != _MODEL_KEYS
            or not all(isinstance(v, bool) for v in spec.values())
        ):
            raise ValueError(f"models.{name} must be {{smd: true|false, etsdm: true|false}}, got {spec!r}")
    if "vanilla" not in models or models["vanilla"] != {"smd": False, "etsdm": False}:
        raise ValueError(
            "models must include `vanilla: {smd: false, etsdm: false}` (the baseline of every ratio)"
        )
    if any(spec["smd"] for spec in models.values()):
        if config["smd_objective"] not in ("smd", "smd-mixture"):
            raise ValueError(f"smd_objective must be 'smd' or 'smd-mixture', got {config['smd_objective']!r}")
        if not isinstance(config.get("smd"), dict):
            raise ValueError("models with smd: true need an `smd` section (latent_dim, num_hypernet_layers)")

    schedule = config["noise_schedule"]
    _positive_int(schedule.get("num_train_timesteps"), "noise_schedule.num_train_timesteps")
    if schedule.get("prediction_type") not in ("epsilon", "v_prediction", "sample"):
        raise ValueError(
            "noise_schedule.prediction_type must be 'epsilon', 'v_prediction' or 'sample', "
            f"got {schedule.get('prediction_type')!r}"
        )
    training = config["training"]
    if not isinstance(training, dict):
        raise ValueError(
            "training must be a mapping of training settings (UnconditionalTrainingConfig fields)"
        )
    # The training section is the engine's configuration: its own validation names the bad setting.
    from diffusers_smd.training import UnconditionalTrainingConfig

    try:
        UnconditionalTrainingConfig(**training).validate()
    except TypeError as error:
        raise ValueError(f"training: {error}; use field names of UnconditionalTrainingConfig") from None
    except ValueError as error:
        raise ValueError(f"training: {error}") from None
    _positive_int(training.get("max_train_steps"), "training.max_train_steps")

    sampling = config["sampling"]
    _positive_int(sampling.get("num_samples"), "sampling.num_samples")
    _positive_int(sampling.get("batch_size"), "sampling.batch_size")
    samplers = sampling.get("samplers")
    if not isinstance(samplers, list) or not samplers:
        raise ValueError("sampling.samplers must be a non-empty list of {name, steps[, seeds]}")
    for i, sampler in enumerate(samplers):
        if not isinstance(sampler, dict) or not {"name", "steps"} <= set(sampler) <= {
            "name",
            "steps",
            "seeds",
            "models",
        }:
            raise ValueError(
                f"sampling.samplers[{i}] must be {{name, steps[, seeds][, models]}}, got {sampler!r}"
            )
        if "models" in sampler:
            chosen = sampler["models"]
            if not isinstance(chosen, list) or "vanilla" not in chosen or not set(chosen) <= set(models):
                raise ValueError(
                    f"sampling.samplers[{i}].models must list models of `models`, vanilla included, got {chosen!r}"
                )
        if sampler["name"] not in SAMPLER_NAMES:
            raise ValueError(
                f"sampling.samplers[{i}].name must be one of {SAMPLER_NAMES}, got {sampler['name']!r}"
            )
        _int_list(sampler["steps"], f"sampling.samplers[{i}].steps")
        if "seeds" in sampler and not set(
            _int_list(sampler["seeds"], f"sampling.samplers[{i}].seeds")
        ) <= set(config["seeds"]):
            raise ValueError(f"sampling.samplers[{i}].seeds must be a subset of seeds {config['seeds']}")
        too_many = [s for s in sampler["steps"] if s > schedule["num_train_timesteps"] or s < 1]
        if too_many:
            raise ValueError(
                f"sampling.samplers[{i}].steps {too_many} must lie in 1..noise_schedule.num_train_timesteps"
            )

    lipschitz = config.get("lipschitz")
    if lipschitz:
        bad = [m for m in lipschitz.get("models", []) if m not in models]
        if bad or not lipschitz.get("models"):
            raise ValueError(
                f"lipschitz.models must name models of `models`, got {lipschitz.get('models')!r}"
            )
        if not set(_int_list(lipschitz.get("seeds"), "lipschitz.seeds")) <= set(config["seeds"]):
            raise ValueError(f"lipschitz.seeds must be a subset of seeds {config['seeds']}")
        dt, t_max = _positive_int(lipschitz.get("dt"), "lipschitz.dt"), lipschitz.get("t_max")
        _positive_int(t_max, "lipschitz.t_max")
        if t_max + dt > schedule["num_train_timesteps"] or t_max < dt:
            raise ValueError(
                "lipschitz needs dt <= t_max and t_max + dt <= noise_schedule.num_train_timesteps"
            )
        _positive_int(lipschitz.get("num_samples"), "lipschitz.num_samples")

    grids = config.get("grids")
    if grids:
        cells = {(s["name"], step) for s in samplers for step in s["steps"]}
        for cell in grids.get("cells", []):
            if not isinstance(cell, dict) or (cell.get("sampler"), cell.get("steps")) not in cells:
                raise ValueError(
                    f"grids.cells entries must be {{sampler, steps}} of sampling.samplers, got {cell!r}"
                )
        if grids.get("seed") not in config["seeds"]:
            raise ValueError(f"grids.seed must be one of seeds {config['seeds']}, got {grids.get('seed')!r}")
        _positive_int(grids.get("count"), "grids.count")
        if grids["count"] > sampling["num_samples"]:
            raise ValueError("grids.count must not exceed sampling.num_samples")


def sampler_cells(config: dict) -> list[tuple[str, int, list[int], list[str]]]:
    """(sampler, steps, seeds, models) of every evaluation row, in config order."""
    return [
        (
            sampler["name"],
            steps,
            list(sampler.get("seeds", config["seeds"])),
            list(sampler.get("models", config["models"])),
        )
        for sampler in config["sampling"]["samplers"]
        for steps in sampler["steps"]
    ]
