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
    """One piece of resumable work: "train", "lipschitz" or "sample" for one (model, seed)."""

    kind: str
    model: str
    seed: int
    sampler: str | None = None
    steps: int | None = None
    needs: tuple[str, ...] = field(default=(), compare=False)

    @property
    def name(self) -> str:
        base = f"{self.kind}-{self.model}-seed{self.seed}"
        return base if self.sampler is None else f"{base}-{self.sampler}-{self.steps}"

    def result_path(self, work_dir: Path) -> Path:
        """The file whose existence means the unit is finished."""
        if self.kind == "train":
            return work_dir / "models" / f"{self.model}-seed{self.seed}" / "run_summary.json"
        return work_dir / self.kind / f"{self.name}.json"


def plan_units(config: dict) -> list[Unit]:
    """All units of a config, in the order workers should take them.

    Trainings first (seed-major, so every model's first seed is trained early), then per (model, seed)
    the evaluation cells, the most expensive (most steps) first, and the Lipschitz estimates.
    """
    units = [Unit("train", m, s) for s in config["seeds"] for m in config["models"]]
    cells = sorted(sampler_cells(config), key=lambda cell: -cell[1])
    lipschitz = config.get("lipschitz") or {}
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
    """The settings a unit's result depends on (not: workers, threads, seeds/samplers lists, output paths)."""
    lipschitz = config.get("lipschitz") or {}
    return {
        "data": config["data"],
        "metric": config["metric"],
        "device": config["device"],
        "models": config["models"],
        "smd_objective": config["smd_objective"],
        "unet": config["unet"],
        "smd": config.get("smd"),
        "noise_schedule": config["noise_schedule"],
        "etsdm": config["etsdm"],
        "training": config["training"],
        "trainer": "diffusers_smd.training engine",
        "num_samples": config["sampling"]["num_samples"],
        "lipschitz": {key: lipschitz.get(key) for key in ("t_max", "dt", "num_samples")},
        "grid_count": (config.get("grids") or {}).get("count"),
    }


def check_work_dir_settings(config: dict, work_dir: Path) -> None:
    """Refuse to resume into a work folder whose results came from different settings.

    The first run records :func:`results_defining_settings` in ``work_dir/settings.json``; a later run
    with other values raises ValueError naming the keys (finished units would otherwise mix settings).
    """
    path = work_dir / "settings.json"
    current = json.loads(json.dumps(results_defining_settings(config)))
    if path.is_file():
        recorded = json.loads(path.read_text())
        changed = sorted(key for key in set(recorded) | set(current) if recorded.get(key) != current.get(key))
        if changed:
            raise ValueError(
                f"work_dir {work_dir} holds results of other settings (changed: {changed}); use another "
                "work_dir or remove that folder to start over"
            )
    else:
        write_json(path, current, indent=1, sort_keys=False)
