"""Overhead of the E-TSDM schedulers: a 50-step sampling loop of each of the 14 variants against its parent.

Both run in the same process, interleaved (parent, E-TSDM, parent, E-TSDM, ...), with a trivial
model so that the scheduler dominates the time; the median of the repeats is compared. The loop is
the stock pipeline one, set_timesteps included:

    scheduler.set_timesteps(50)
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)   # where the scheduler has it
        x = scheduler.step(model(model_input, t), t, x).prev_sample

Second-order schedulers (Heun, KDPM2) step twice per inference step, as in pipelines.

Usage: python benchmarks/bench_etsdm_schedulers.py [--quick] [--repeats N] [--output PATH]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from diffusers_smd import ETSDM_VARIANTS  # noqa: E402

DEFAULT_OUTPUT = pathlib.Path(__file__).resolve().parent / "results" / "etsdm_schedulers.json"
PAIRS = {parent.__name__: (parent, variant) for parent, variant in ETSDM_VARIANTS.items()}


def trivial_model(x: torch.Tensor, t) -> torch.Tensor:
    return 0.1 * x


def time_loop(scheduler, steps: int, shape: tuple[int, ...], seed: int = 0) -> float:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator)
    kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    scale = getattr(scheduler, "scale_model_input", None)
    start = time.perf_counter()
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        model_input = scale(x, t) if scale is not None else x
        x = scheduler.step(trivial_model(model_input, t), t, x, **kwargs).prev_sample
    return time.perf_counter() - start


def summarize_pair(
    name: str, parent: str, etsdm: str, parent_times: list[float], etsdm_times: list[float]
) -> dict:
    """One result row from the interleaved loop times (seconds): medians in ms and their ratio E-TSDM / parent.

    On a shared machine the fastest repeat is the least disturbed one, so the ratio of the minimums is a second
    estimate of the cost.
    """
    parent_median, etsdm_median = statistics.median(parent_times), statistics.median(etsdm_times)
    return {
        "scheduler": name,
        "parent": parent,
        "etsdm": etsdm,
        "parent_median_ms": round(parent_median * 1e3, 3),
        "etsdm_median_ms": round(etsdm_median * 1e3, 3),
        "ratio": round(etsdm_median / parent_median, 4),
        "ratio_of_minimums": round(min(etsdm_times) / min(parent_times), 4),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run (3 repeats, 10 steps)")
    parser.add_argument(
        "--repeats", type=int, default=41, help="interleaved repeats per scheduler (median taken)"
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--output", type=pathlib.Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    repeats, steps = (3, 10) if args.quick else (args.repeats, args.steps)
    if repeats < 1 or steps < 1:
        parser.error("--repeats and --steps must be >= 1")
    torch.set_num_threads(1)
    load_at_start = round(os.getloadavg()[0], 2)
    shape = (1, 4, 64, 64)  # a Stable Diffusion latent
    results = []
    for name, (parent_cls, etsdm_cls) in PAIRS.items():
        parent, etsdm = parent_cls(), etsdm_cls()
        time_loop(parent, steps, shape), time_loop(etsdm, steps, shape)  # warm-up
        parent_times, etsdm_times = [], []
        for _ in range(repeats):
            parent_times.append(time_loop(parent, steps, shape))
            etsdm_times.append(time_loop(etsdm, steps, shape))
        row = summarize_pair(name, parent_cls.__name__, etsdm_cls.__name__, parent_times, etsdm_times)
        results.append(row)
        print(
            f"{name:34s} parent {row['parent_median_ms']:8.2f} ms  E-TSDM {row['etsdm_median_ms']:8.2f} ms  "
            f"ratio {row['ratio']:.3f}  (of minimums {row['ratio_of_minimums']:.3f})"
        )
    report = {
        "benchmark": "50-step stock sampling loop (set_timesteps + scale_model_input + step), trivial model 0.1 * x",
        "steps": steps,
        "repeats": repeats,
        "sample_shape": list(shape),
        "torch_threads": 1,
        "quick": args.quick,
        "machine": " ".join(
            filter(None, [platform.machine(), platform.processor(), "python", platform.python_version()])
        ),
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "target_ratio": 1.05,
        "max_ratio": max(row["ratio"] for row in results),
        "load_average_1min_at_start": load_at_start,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
