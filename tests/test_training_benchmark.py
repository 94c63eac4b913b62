"""The training-step benchmark: its arithmetic on stub timings, and a quick run through the engine."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_bench():
    spec = importlib.util.spec_from_file_location(
        "bench_train_step", os.path.join(ROOT, "benchmarks", "bench_train_step.py")
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_summary_takes_medians_and_their_ratios():
    times = {"vanilla": [1.0, 9.0, 2.0], "smd": [2.4, 2.6, 2.5], "smd-mixture": [8.0, 7.0, 100.0]}
    summary = load_bench().summarise(times, target=1.25)
    assert summary["median_step_seconds"] == {"vanilla": 2.0, "smd": 2.5, "smd-mixture": 8.0}
    assert summary["ratio_smd_over_vanilla"] == pytest.approx(1.25)
    assert summary["ratio_smd_mixture_over_vanilla"] == pytest.approx(4.0)
    assert summary["meets_target"]  # 1.25 <= 1.25
    assert not load_bench().summarise({**times, "smd": [2.6, 2.6, 2.6]}, target=1.25)["meets_target"]


def test_quick_run_times_engine_steps_of_the_same_unet(tmp_path):
    output = tmp_path / "quick.json"
    load_bench().main(["--quick", "--output", str(output)])
    written = json.loads(output.read_text())
    assert set(written["median_step_seconds"]) == {"vanilla", "smd", "smd-mixture"}
    assert all(seconds > 0 for seconds in written["median_step_seconds"].values())
    # Same UNet inside: the SMD models have the vanilla parameters plus the mixture modules.
    assert written["parameters"]["smd"] > written["parameters"]["vanilla"]
    assert written["parameters"]["smd"] == written["parameters"]["smd-mixture"]
