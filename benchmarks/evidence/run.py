"""Evidence benchmark driver: do E-TSDM and SMD deliver what their papers claim? One command, resumable.

    python benchmarks/evidence/run.py --config benchmarks/evidence/digits_cpu.yaml
    python benchmarks/evidence/run.py --config benchmarks/evidence/digits_cpu.yaml --quick   # smoke run
    python benchmarks/evidence/run.py --config benchmarks/evidence/digits_cpu.yaml --report \\
        --readme README.md                                                                 # tables only

Trains every model of the config (vanilla, E-TSDM, SMD, SMD + E-TSDM) for every seed, samples each with
every configured solver, scores the samples against the held-out images, estimates the Lipschitz
constant in t, and writes ``evidence_results.json``, ``evidence_tables.md``, ``lipschitz.png`` and
``sample_grids.png`` to the config's ``output_dir``. Work is split into units whose results are written
atomically under ``work_dir``; a rerun skips finished units, so an interrupted run resumes where it
stopped. ``workers`` processes claim units in parallel, each with ``threads_per_worker`` threads.
``--report`` rebuilds the tables (and the Lipschitz plot) from the results JSON alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "benchmarks.evidence"

from benchmarks.evidence.config import load_config  # noqa: E402
from benchmarks.evidence.report import (  # noqa: E402
    aggregate,
    markdown_tables,
    plot_lipschitz,
    plot_sample_grids,
    replace_marked_block,
)
from benchmarks.evidence.store import (  # noqa: E402
    check_work_dir_settings,
    clear_claims,
    plan_units,
    unit_done,
)
from diffusers_smd.atomic import write_json  # noqa: E402

RESULTS_NAME = "evidence_results.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="the benchmark's settings file (.yaml or .json)")
    parser.add_argument(
        "--quick", action="store_true", help="apply the config's `quick:` overlay (smoke run)"
    )
    parser.add_argument(
        "--report", action="store_true", help="only rebuild tables and plot from the results JSON"
    )
    parser.add_argument(
        "--readme", help="markdown file whose generated-tables block is replaced by the tables"
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


def _record_invocation(work_dir: Path, seconds: float, units_run: int) -> float:
    """Append this invocation to work_dir/invocations.json; returns the total seconds of working invocations."""
    path = work_dir / "invocations.json"
    history = json.loads(path.read_text()) if path.is_file() else []
    if units_run:
        history.append({"seconds": seconds, "units_run": units_run, "finished_at": time.time()})
        write_json(path, history, indent=1, sort_keys=False)
    return sum(item["seconds"] for item in history)


def _write_tables(results: dict, output_dir: Path, readme: str | None) -> None:
    tables = markdown_tables(results)
    (output_dir / "evidence_tables.md").write_text(tables)
    if readme:
        path = Path(readme)
        path.write_text(replace_marked_block(path.read_text(), tables))
        _log(f"updated the tables in {path}")
    print(tables)


def main(argv=None) -> None:
    args = parse_args(argv)
    config = load_config(args.config, quick=args.quick)
    output_dir, work_dir = Path(config["output_dir"]), Path(config["work_dir"])

    if args.worker:
        from benchmarks.evidence.worker import worker_loop

        worker_loop(config, work_dir, log=_log)
        return

    if args.report:
        results_path = output_dir / RESULTS_NAME
        if not results_path.is_file():
            raise SystemExit(f"--report needs {results_path}; run the benchmark first")
        results = json.loads(results_path.read_text())
        if results.get("config", {}).get("lipschitz"):
            plot_lipschitz(results, output_dir / "lipschitz.png")
        _write_tables(results, output_dir, args.readme)
        return

    check_work_dir_settings(config, work_dir)
    units = plan_units(config)
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
    wall_clock = _record_invocation(work_dir, time.perf_counter() - started, len(pending))

    results = aggregate(config, work_dir, wall_clock_seconds=wall_clock or None)
    from benchmarks.evidence.worker import real_data_floor

    results["real_data_floor"] = real_data_floor(config)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / RESULTS_NAME, results, indent=1, sort_keys=False)
    if config.get("lipschitz"):
        plot_lipschitz(results, output_dir / "lipschitz.png")
    if config.get("grids"):
        plot_sample_grids(config, work_dir, output_dir / "sample_grids.png")
    _write_tables(results, output_dir, args.readme)
    _log(f"results in {output_dir}")


if __name__ == "__main__":
    main()
