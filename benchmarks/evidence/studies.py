"""The kinds of study the driver runs, each a small set of functions over one config (``study:`` in the file).

* ``images``: image models (UNet2DModel / SMDUNet2DModel) trained by the engine on an image data set, sampled
  with named solvers and scored (FDD / FID), K(t) and the SMD mixture spread (worker.py, report.py);
* ``etsdm_exact``: MLPs on Gaussian mixtures against the exact eps* (exact_score.py, exact_report.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["STUDY_KINDS", "Study", "study_of"]

STUDY_KINDS = ("images", "etsdm_exact")


@dataclass(frozen=True)
class Study:
    """What the driver needs of a study kind."""

    validate: Callable[[dict], None]
    plan_units: Callable[[dict], list]
    run_unit: Callable[[dict, object, Path], None]
    aggregate: Callable[..., dict]
    write_outputs: Callable[[dict, Path, Path], str]
    markdown_tables: Callable[[dict], str]


def study_of(config: dict) -> Study:
    """The study kind a config names (``images`` when it names none)."""
    kind = config.get("study", "images")
    if kind == "images":
        from . import config as config_module
        from . import report, store, worker

        return Study(
            validate=config_module.validate_config,
            plan_units=store.plan_units,
            run_unit=lambda *args: worker.run_unit(*args),  # looked up at call time (tests replace it)
            aggregate=report.aggregate,
            write_outputs=report.write_outputs,
            markdown_tables=report.markdown_tables,
        )
    if kind == "etsdm_exact":
        from . import exact_report, exact_score

        return Study(
            validate=exact_score.validate,
            plan_units=exact_score.plan_units,
            run_unit=lambda *args: exact_score.run_unit(*args),
            aggregate=exact_report.aggregate,
            write_outputs=exact_report.write_outputs,
            markdown_tables=exact_report.markdown_tables,
        )
    raise ValueError(f"study must be one of {STUDY_KINDS}, got {kind!r}")
