"""Evidence driver: run one study of the E-TSDM / SMD claims from its config file. One command, resumable.

    python benchmarks/evidence/run.py --config benchmarks/evidence/studies/etsdm_exact.yaml
    python benchmarks/evidence/run.py --config benchmarks/evidence/studies/etsdm_digits.yaml
    python benchmarks/evidence/run.py --config benchmarks/evidence/studies/smd_fewstep.yaml
    python benchmarks/evidence/run.py --config ... --quick          # seconds-long smoke run, written elsewhere
    python benchmarks/evidence/run.py --config ... --report         # tables and figures from the results JSON
    python benchmarks/evidence/run.py --config ... --update-docs    # also refresh README.md and docs/evidence.md

A study is split into units (one training, one sampling cell, one K(t) curve, ...) whose results are
written atomically under the config's ``work_dir``; a rerun skips finished units, so an interrupted run
resumes where it stopped and a changed config redoes only what it changes (a run with other
result-defining settings in the same work folder is refused). ``workers`` processes claim units in
parallel, each with ``threads_per_worker`` threads. The study's ``results.json``, ``tables.md`` and
figures go to the config's ``output_dir``; ``--update-docs`` regenerates the README verdict table and the
tables of docs/evidence.md from every study's committed JSON (benchmarks/evidence/documents.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "benchmarks.evidence"

from benchmarks.evidence.config import load_config  # noqa: E402
from benchmarks.evidence.store import check_work_dir_settings, clear_claims, unit_done  # noqa: E402
from benchmarks.evidence.studies import study_of  # noqa: E402
from diffusers_smd.atomic import write_json  # noqa: E402

RESULTS_NAME = "results.json"
TABLES_NAME = "tables.md"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="the study's settings file (.yaml or .json)")
    parser.add_argument(
        "--quick", action="store_true", help="apply the config's `quick:` overlay (smoke run)"
    )
    parser.add_argument(
        "--report", action="store_true", help="only rebuild tables and figures from the results JSON"
    )
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="regenerate the README verdict table and docs/evidence.md tables",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _log(*args, **kwargs) -> None:
    print(*args, **kwargs, file=sys.stderr)


def _spawn_workers(args: argparse.Namespace, config: dict) -> None:
    command = [sys.executable, str(Path(__file__).resolve()), "--config", args.config, "--worker"]
    if args.quick:
        command.append("--quick")
    env = dict(os.environ, OMP_NUM_THREADS=str(config["threads_per_worker"]))
    # a SIGTERM to the driver stops its workers too (the finally below runs)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    processes = [subprocess.Popen(command, env=env) for _ in range(config["workers"])]
    try:
        while any(p.poll() is None for p in processes):
            if any(p.returncode not in (None, 0) for p in processes):
                break
            time.sleep(1.0)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            process.wait()
    failed = [p.returncode for p in processes if p.returncode != 0]
    if failed:
        raise SystemExit(f"a worker failed (exit codes {failed}); rerun the same command to resume")


def record_invocation(work_dir: Path, seconds: float, units_run: int) -> float:
    """Append this invocation to work_dir/invocations.json; returns the total seconds of working invocations."""
    path = work_dir / "invocations.json"
    history = json.loads(path.read_text()) if path.is_file() else []
    if units_run:
        history.append({"seconds": seconds, "units_run": units_run, "finished_at": time.time()})
        write_json(path, history, indent=1, sort_keys=False)
    return sum(item["seconds"] for item in history)


def write_report(config: dict, results: dict, output_dir: Path, work_dir: Path) -> str:
    """Figures and ``tables.md`` of one study from its results; returns the tables."""
    output_dir.mkdir(parents=True, exist_ok=True)
    tables = study_of(config).write_outputs(results, output_dir, work_dir)
    (output_dir / TABLES_NAME).write_text(tables)
    return tables


def main(argv=None) -> None:
    args = parse_args(argv)
    config = load_config(args.config, quick=args.quick)
    study = study_of(config)
    output_dir, work_dir = Path(config["output_dir"]), Path(config["work_dir"])

    if args.worker:
        from benchmarks.evidence.worker import worker_loop

        worker_loop(config, work_dir, log=_log)
        return

    if args.report:
        results_path = output_dir / RESULTS_NAME
        if not results_path.is_file():
            raise SystemExit(f"--report needs {results_path}; run the study first")
        results = json.loads(results_path.read_text())
    else:
        check_work_dir_settings(config, work_dir)
        units = study.plan_units(config)
        pending = [u for u in units if not unit_done(u, work_dir)]
        _log(f"{len(units)} units, {len(units) - len(pending)} already finished, {len(pending)} to run")
        started = time.perf_counter()
        if pending:
            work_dir.mkdir(parents=True, exist_ok=True)
            clear_claims(work_dir)
            if config["workers"] == 1:
                from benchmarks.evidence.worker import worker_loop

                worker_loop(config, work_dir, log=_log)
            else:
                _spawn_workers(args, config)
        wall_clock = record_invocation(work_dir, time.perf_counter() - started, len(pending))
        results = study.aggregate(config, work_dir, wall_clock_seconds=wall_clock or None)
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / RESULTS_NAME, results, indent=1, sort_keys=False)
    print(write_report(config, results, output_dir, work_dir))
    if args.update_docs:
        from benchmarks.evidence.documents import update_documents

        for path in update_documents():
            _log(f"updated {path}")
    _log(f"results in {output_dir}")


if __name__ == "__main__":
    main()
