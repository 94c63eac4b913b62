"""Resumability: atomic result files, the list of work units, and claims shared by worker processes.

A unit is finished exactly when its result file exists. Every result is written to a temporary name in
the same folder and renamed into place (``os.replace`` / ``os.rename`` are atomic on one file system),
so a process killed at any moment leaves either no result or a complete one, and a rerun redoes only
what has no result. Worker processes claim units with ``O_CREAT | O_EXCL`` lock files; the driver
clears stale claims before it starts its workers.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from diffusers_smd.atomic import write_json

from .config import sampler_cells

__all__ = [
    "Unit",
    "plan_units",
    "unit_done",
    "try_claim",
    "clear_claims",
    "next_unit",
    "results_defining_settings",
    "check_work_dir_settings",
]


@dataclass(frozen=True)
class Unit:
    """One piece of resumable work of a study, e.g. "train", "sample" or "lipschitz" for one (model, seed).

    ``group`` names the data / task variant a unit belongs to when a study has several (a mixture and
    spread of the exact-score study); it prefixes the model in names and paths.
    """

    kind: str
    model: str
    seed: int
    sampler: str | None = None
    steps: int | None = None
    needs: tuple[str, ...] = field(default=(), compare=False)
    group: str | None = None

    @property
    def model_key(self) -> str:
        """``<group>-<model>-seed<seed>``: the trained model's folder name."""
        return f"{self.group + '-' if self.group else ''}{self.model}-seed{self.seed}"

    @property
    def name(self) -> str:
        parts = [self.kind, self.model_key, self.sampler, None if self.steps is None else str(self.steps)]
        return "-".join(part for part in parts if part is not None)

    def result_path(self, work_dir: Path) -> Path:
        """The file whose existence means the unit is finished."""
        if self.kind == "train":
            return work_dir / "models" / self.model_key / "run_summary.json"
        return work_dir / self.kind / f"{self.name}.json"


def plan_units(config: dict) -> list[Unit]:
    """All units of an image study, in the order workers should take them.

    Trainings first (seed-major, so every model's first seed is trained early), then per (model, seed)
    the evaluation cells (most steps first), K(t) of the final model and of its training checkpoints,
    and the mixture spread of SMD models.
    """
    units = [Unit("train", m, s) for s in config["seeds"] for m in config["models"]]
    cells = sorted(sampler_cells(config), key=lambda cell: -cell[1])
    lipschitz = config.get("lipschitz") or {}
    mixture = config.get("mixture") or {}
    for seed in config["seeds"]:
        for model in config["models"]:
            needs = (Unit("train", model, seed).name,)
            units += [
                Unit("sample", model, seed, sampler, steps, needs)
                for sampler, steps, seeds, cell_models in cells
                if seed in seeds and model in cell_models
            ]
            if model in lipschitz.get("models", []) and seed in lipschitz.get("seeds", []):
                units.append(Unit("lipschitz", model, seed, needs=needs))
                units += [
                    Unit("lipschitz-checkpoint", model, seed, steps=step, needs=needs)
                    for step in lipschitz.get("checkpoints") or []
                ]
            if model in mixture.get("models", []) and seed in mixture.get("seeds", []):
                units.append(Unit("mixture", model, seed, needs=needs))
    return units


def unit_done(unit: Unit, work_dir: Path) -> bool:
    return unit.result_path(work_dir).is_file()


def _claim_path(work_dir: Path, unit: Unit) -> Path:
    return work_dir / "claims" / f"{unit.name}.claim"


def try_claim(unit: Unit, work_dir: Path) -> bool:
    """Atomically claim ``unit`` for this process; False when another process holds it."""
    path = _claim_path(work_dir, unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def clear_claims(work_dir: Path) -> None:
    """Remove every claim (call only when no worker of this work folder is running)."""
    shutil.rmtree(work_dir / "claims", ignore_errors=True)
    # temporary files of killed processes
    for tmp in list(work_dir.rglob(".*.tmp")) if work_dir.exists() else []:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def next_unit(units: list[Unit], work_dir: Path) -> tuple[Unit | None, bool]:
    """The first unfinished, unclaimed unit whose prerequisites are finished, claimed for this process.

    Returns ``(unit, False)`` when one was claimed; ``(None, True)`` when units remain that are blocked
    or claimed by others (wait and ask again); ``(None, False)`` when nothing is left for this process.
    """
    finished = {u.name for u in units if unit_done(u, work_dir)}
    waiting = False
    for unit in units:
        if unit.name in finished:
            continue
        if not all(need in finished for need in unit.needs):
            waiting = True
            continue
        if try_claim(unit, work_dir):
            if unit_done(unit, work_dir):  # finished between the scan and the claim
                continue
            return unit, False
        waiting = True
    return None, waiting


def results_defining_settings(config: dict) -> dict:
    """The settings a unit's result depends on (not: workers, threads, lists of seeds / samplers / models /
    comparisons, output paths). A model's own settings are compared per model, so adding a model is fine."""
    if config.get("study") == "etsdm_exact":
        excluded = {"workers", "threads_per_worker", "seeds", "output_dir", "work_dir", "profile", "config_file",
                    "models", "mixtures", "spreads", "sampling"}  # fmt: skip
        settings = {key: value for key, value in config.items() if key not in excluded}
        settings["sampling"] = {"num_samples": config["sampling"]["num_samples"]}
        return settings
    lipschitz, mixture = config.get("lipschitz") or {}, config.get("mixture") or {}
    return {
        "data": config["data"],
        "metric": config["metric"],
        "device": config["device"],
        "unet": config["unet"],
        "smd": config.get("smd"),
        "noise_schedule": config["noise_schedule"],
        "etsdm": config["etsdm"],
        "training": config["training"],
        "trainer": "diffusers_smd.training engine",
        "num_samples": config["sampling"]["num_samples"],
        "lipschitz": {key: lipschitz.get(key) for key in ("t_max", "dt", "num_samples")},
        "mixture": {key: mixture.get(key) for key in ("num_samples", "num_draws")},
        "grid_count": (config.get("grids") or {}).get("count"),
    }


def check_work_dir_settings(config: dict, work_dir: Path) -> None:
    """Refuse to resume into a work folder whose results came from different settings.

    The first run records :func:`results_defining_settings` in ``work_dir/settings.json``; a later run
    with other values raises ValueError naming the keys (finished units would otherwise mix settings).
    """
    path = work_dir / "settings.json"
    current = json.loads(json.dumps(results_defining_settings(config)))
    current["model_specs"] = json.loads(json.dumps(config.get("models", {})))
    if path.is_file():
        recorded = json.loads(path.read_text())
        changed = sorted(
            key
            for key in set(recorded) | set(current)
            if key != "model_specs" and recorded.get(key) != current.get(key)
        )
        old, new = recorded.get("model_specs", {}), current["model_specs"]
        changed += [f"models.{m}" for m in sorted(set(old) & set(new)) if old[m] != new[m]]
        if changed:
            raise ValueError(
                f"work_dir {work_dir} holds results of other settings (changed: {changed}); use another "
                "work_dir or remove that folder to start over"
            )
        current["model_specs"] = {**old, **new}
    write_json(path, current, indent=1, sort_keys=False)
