"""The training-step benchmark's --quick mode runs and reports consistent ratios."""

import importlib.util
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_train_step_quick(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "bench_train_step", os.path.join(ROOT, "benchmarks", "bench_train_step.py")
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    output = tmp_path / "quick.json"
    result = bench.main(["--quick", "--output", str(output)])
    written = json.loads(output.read_text())
    assert written["ratio_smd_over_vanilla"] == result["ratio_smd_over_vanilla"]
    median = written["median_step_seconds"]
    assert abs(written["ratio_smd_over_vanilla"] - median["smd"] / median["vanilla"]) < 1e-12
    assert abs(written["ratio_smd_mixture_over_vanilla"] - median["smd-mixture"] / median["vanilla"]) < 1e-12
    # Same UNet inside: the SMD models have the vanilla parameters plus the mixture modules.
    assert written["parameters"]["smd"] > written["parameters"]["vanilla"]
    assert written["parameters"]["smd"] == written["parameters"]["smd-mixture"]
