"""A study's one settings file (YAML or JSON): loading, the ``quick`` overlay, validation.

Every setting of a study lives in one file under ``benchmarks/evidence/studies/``; the driver has no other
knobs. ``study:`` names the kind (``images``: image models trained on a data set; ``etsdm_exact``: the
exact-score mixtures). A top-level ``quick`` mapping is deep-merged over the file by ``--quick`` (a
seconds-long smoke run that writes elsewhere). Validation happens before any work and names the key.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from diffusers_smd.losses import OBJECTIVE_NAMES
from diffusers_smd.losses.gaussian_steps import PREDICTION_TYPES

__all__ = [
    "SAMPLER_LABELS",
    "SAMPLER_NAMES",
    "METRICS",
    "comparison_pairs",
    "deep_merge",
    "load_config",
    "model_timesteps",
    "sampler_cells",
    "validate_config",
]

#: Samplers of the image studies (names of diffusers_smd.sampling.SCHEDULERS).
#: The samplers a study may use (names of the package's sampler registry, ``diffusers_smd.sampling.SCHEDULERS``)
#: and how tables and figures label them.
SAMPLER_LABELS = {"ddim": "DDIM", "dpmsolver++": "DPM-Solver++", "ddpm": "DDPM ancestral", "euler": "Euler",
                  "unipc": "UniPC"}  # fmt: skip
SAMPLER_NAMES = tuple(SAMPLER_LABELS)
#: "digits": Frechet digits distance + class histogram (built-in digits); "fid": Inception FID.
METRICS = ("digits", "fid")

_TOP_KEYS = {
    "study", "title", "data", "metric", "device", "threads_per_worker", "workers", "seeds", "models", "unet",
    "smd", "noise_schedule", "etsdm", "training", "sampling", "lipschitz", "mixture", "comparisons", "grids",
    "output_dir", "work_dir", "quick", "launcher",
}  # fmt: skip
_OPTIONAL = {"quick", "grids", "lipschitz", "mixture", "smd", "launcher", "title", "study"}
_SECTION_KEYS = {
    "data": {"dataset", "resolution", "channels", "train_split", "heldout_split", "image_column", "data_dir",
             "max_train_images"},
    "noise_schedule": {"num_train_timesteps", "beta_schedule", "prediction_type"},
    "etsdm": {"threshold", "intervals"},
    "sampling": {"num_samples", "batch_size", "samplers"},
    "lipschitz": {"models", "seeds", "t_max", "dt", "num_samples", "checkpoints"},
    "mixture": {"models", "seeds", "num_samples", "num_draws"},
    "grids": {"cells", "seed", "count"},
    "smd": {"latent_dim", "num_hypernet_layers", "identifier_block_out_channels"},
}  # fmt: skip
_MODEL_KEYS = {"objective", "etsdm", "num_train_timesteps", "unet"}


def deep_merge(base: dict, overlay: dict) -> dict:
    """A copy of ``base`` with ``overlay`` merged in: mappings recursively, anything else replaced; a ``null``
    (None) in ``overlay`` removes the key."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
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
    """Read, overlay ``quick`` (when asked) and validate a study config; returns a plain dict."""
    from .studies import study_of

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path} does not exist")
    raw = _read(path)
    overlay = raw.pop("quick", None) or {}
    if quick and not overlay:
        raise ValueError(f"--quick needs a `quick:` section in {path}")
    config = deep_merge(raw, overlay) if quick else raw
    config.pop("quick", None)
    config.setdefault("study", "images")
    study_of(config).validate(config)
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


def _model_list(value: Any, models: dict, name: str) -> list[str]:
    if not isinstance(value, list) or not value or not set(value) <= set(models):
        raise ValueError(f"{name} must list models of `models` {sorted(models)}, got {value!r}")
    return value


def model_timesteps(config: dict, model: str) -> int:
    """The number of training diffusion steps T of ``model`` (its own, else the noise schedule's)."""
    return config["models"][model].get("num_train_timesteps", config["noise_schedule"]["num_train_timesteps"])


def validate_config(config: dict) -> None:
    """Raise ValueError naming the key for anything missing, unknown or out of range (image studies)."""
    unknown = sorted(set(config) - _TOP_KEYS - {"profile", "config_file"})
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; allowed: {sorted(_TOP_KEYS)}")
    missing = sorted(k for k in _TOP_KEYS - _OPTIONAL if k not in config)
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

    schedule = config["noise_schedule"]
    _positive_int(schedule.get("num_train_timesteps"), "noise_schedule.num_train_timesteps")
    if schedule.get("prediction_type") not in PREDICTION_TYPES:
        raise ValueError(
            f"noise_schedule.prediction_type must be one of {PREDICTION_TYPES}, got {schedule.get('prediction_type')!r}"
        )
    models = config["models"]
    if not isinstance(models, dict) or not models:
        raise ValueError(
            "models must be a non-empty mapping name -> {objective, etsdm[, num_train_timesteps][, unet]}"
        )
    for name, spec in models.items():
        if not isinstance(spec, dict) or not {"objective", "etsdm"} <= set(spec) <= _MODEL_KEYS:
            raise ValueError(
                f"models.{name} must be {{objective, etsdm[, num_train_timesteps][, unet]}}, got {spec!r}"
            )
        if spec["objective"] not in OBJECTIVE_NAMES:
            raise ValueError(
                f"models.{name}.objective must be one of {OBJECTIVE_NAMES}, got {spec['objective']!r}"
            )
        if not isinstance(spec["etsdm"], bool):
            raise ValueError(f"models.{name}.etsdm must be true or false, got {spec['etsdm']!r}")
        if "num_train_timesteps" in spec:
            _positive_int(spec["num_train_timesteps"], f"models.{name}.num_train_timesteps")
        if "unet" in spec and not isinstance(spec["unet"], dict):
            raise ValueError(f"models.{name}.unet must be a mapping of UNet2DModel arguments")
        if spec["objective"] != "vanilla" and not isinstance(config.get("smd"), dict):
            raise ValueError(
                f"models.{name} uses an SMD objective: the config needs an `smd` section (latent_dim)"
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
        raise ValueError("sampling.samplers must be a non-empty list of {name, steps[, seeds][, models]}")
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
            _model_list(sampler["models"], models, f"sampling.samplers[{i}].models")
        if sampler["name"] not in SAMPLER_NAMES:
            raise ValueError(
                f"sampling.samplers[{i}].name must be one of {SAMPLER_NAMES}, got {sampler['name']!r}"
            )
        _int_list(sampler["steps"], f"sampling.samplers[{i}].steps")
        if "seeds" in sampler and not set(
            _int_list(sampler["seeds"], f"sampling.samplers[{i}].seeds")
        ) <= set(config["seeds"]):
            raise ValueError(f"sampling.samplers[{i}].seeds must be a subset of seeds {config['seeds']}")
        for model in sampler.get("models", models):
            too_many = [s for s in sampler["steps"] if not 1 <= s <= model_timesteps(config, model)]
            if too_many:
                raise ValueError(
                    f"sampling.samplers[{i}].steps {too_many} must lie in 1..{model_timesteps(config, model)} "
                    f"(the training steps of {model})"
                )

    comparisons = config["comparisons"]
    if not isinstance(comparisons, list) or not comparisons:
        raise ValueError("comparisons must be a non-empty list of {models: [...], baseline: name}")
    for i, item in enumerate(comparisons):
        if (
            not isinstance(item, dict)
            or set(item) != {"models", "baseline"}
            or item["baseline"] not in models
        ):
            raise ValueError(f"comparisons[{i}] must be {{models: [...], baseline: a model}}, got {item!r}")
        _model_list(item["models"], models, f"comparisons[{i}].models")

    lipschitz = config.get("lipschitz")
    if lipschitz:
        _model_list(lipschitz.get("models"), models, "lipschitz.models")
        if not set(_int_list(lipschitz.get("seeds"), "lipschitz.seeds")) <= set(config["seeds"]):
            raise ValueError(f"lipschitz.seeds must be a subset of seeds {config['seeds']}")
        dt, t_max = _positive_int(lipschitz.get("dt"), "lipschitz.dt"), lipschitz.get("t_max")
        _positive_int(t_max, "lipschitz.t_max")
        for model in lipschitz["models"]:
            if t_max + dt > model_timesteps(config, model) - 1:
                raise ValueError(f"lipschitz needs t_max + dt < the training steps of {model}")
        _positive_int(lipschitz.get("num_samples"), "lipschitz.num_samples")
        checkpoints = lipschitz.get("checkpoints")
        if checkpoints is not None:
            every = training.get("checkpointing_steps")
            bad = [s for s in _int_list(checkpoints, "lipschitz.checkpoints")
                   if not every or s % every or s >= training["max_train_steps"]]  # fmt: skip
            if bad:
                raise ValueError(
                    f"lipschitz.checkpoints {bad} must be multiples of training.checkpointing_steps below "
                    "training.max_train_steps"
                )

    mixture = config.get("mixture")
    if mixture:
        chosen = _model_list(mixture.get("models"), models, "mixture.models")
        vanilla = [m for m in chosen if models[m]["objective"] == "vanilla"]
        if vanilla:
            raise ValueError(f"mixture.models must be SMD models, got vanilla ones {vanilla}")
        if not set(_int_list(mixture.get("seeds"), "mixture.seeds")) <= set(config["seeds"]):
            raise ValueError(f"mixture.seeds must be a subset of seeds {config['seeds']}")
        _positive_int(mixture.get("num_samples"), "mixture.num_samples")
        _positive_int(mixture.get("num_draws"), "mixture.num_draws")
        if mixture["num_draws"] < 2:
            raise ValueError("mixture.num_draws must be at least 2 (a spread needs two draws)")

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


def comparison_pairs(config: dict) -> list[tuple[str, str]]:
    """(model, baseline) pairs of ``comparisons``, in config order."""
    return [(model, item["baseline"]) for item in config["comparisons"] for model in item["models"]]
