"""The typed run summary that training writes as ``run_summary.json`` and publishing renders the card from.

Every fact is an explicit field (no prose to parse back): what was trained (task, model and scheduler
classes, objective, E-TSDM settings, prediction type, timesteps), on what (data set name, kind and size,
resolution, channels, base model), how (steps, batch size, processes, EMA, seed, every setting) and what it
cost (wall-clock seconds, parameter counts).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from ..atomic import read_json, write_json

__all__ = ["RUN_SUMMARY_FILE", "DATASET_KINDS", "RunSummary"]

RUN_SUMMARY_FILE = "run_summary.json"
#: ``builtin`` (the package's digits), ``hub`` (a Hub data set id), ``folder`` (a local image folder or data
#: set), ``memory`` (a tensor given in Python).
DATASET_KINDS = ("builtin", "hub", "folder", "memory")


@dataclass
class RunSummary:
    """Facts of one training run (``run_summary.json``)."""

    task: str
    model_class: str
    noise_scheduler: str
    objective: str
    prediction_type: str
    num_train_timesteps: int
    dataset: str
    dataset_kind: str
    dataset_size: int
    global_step: int
    max_train_steps: int
    total_batch_size: int
    num_processes: int
    use_ema: bool
    seed: int
    wall_clock_seconds: float
    parameter_counts: dict[str, int | None]
    etsdm: dict[str, Any] = field(
        default_factory=lambda: {"enabled": False, "threshold": None, "intervals": None}
    )
    resolution: int | None = None
    num_channels: int | None = None
    base_model: str | None = None
    final_loss: float | None = None
    resumed_from: str | None = None
    package_version: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset_kind not in DATASET_KINDS:
            raise ValueError(f"dataset_kind must be one of {DATASET_KINDS}, got {self.dataset_kind!r}")

    @property
    def uses_etsdm(self) -> bool:
        return bool(self.etsdm.get("enabled"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, folder: str | os.PathLike) -> None:
        """Write ``<folder>/run_summary.json`` atomically."""
        write_json(os.path.join(folder, RUN_SUMMARY_FILE), self.to_dict())

    @classmethod
    def read(cls, folder: str | os.PathLike) -> RunSummary | None:
        """The summary saved in ``folder``, or None when it has none. Unknown keys (newer versions) are ignored."""
        path = os.path.join(folder, RUN_SUMMARY_FILE)
        if not os.path.isfile(path):
            return None
        payload = read_json(path)
        if not isinstance(payload, dict):
            raise ValueError(f"{path} does not hold a run summary (a JSON object)")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in payload.items() if k in names})
        except TypeError as error:
            raise ValueError(f"{path} is not a complete run summary ({error})") from error
