"""The dilation-path benchmark's --quick smoke run: equal budgets, JSON + PNG written (timings not asserted)."""

import importlib.util
import json
import pathlib

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_dilation_path.py"


def test_quick_benchmark_spends_an_equal_budget_and_writes_results(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_dilation_path", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--quick", "--targets", "mog10d", "--output-dir", str(tmp_path)])
    result = json.loads((tmp_path / "dilation_path_quick_mog10d.json").read_text())
    assert (tmp_path / "dilation_path_quick_mog10d.png").stat().st_size > 0
    budget = result["budget_per_sample"]
    methods = result["runs"][0]["methods"]
    assert set(methods) == set(bench.METHODS)
    for name, row in methods.items():
        # every method spends at most the budget, and none leaves a whole level (10 steps) of it unused
        assert budget - bench.STEPS_PER_LEVEL < row["evaluations_per_sample"] <= budget, name
        assert 0.0 <= row["mode_weight_tv"] <= 1.0
    true = result["runs"][0]["true_weights"]
    for name, row in methods.items():
        tv = 0.5 * sum(abs(a - b) for a, b in zip(row["mode_weights"], true))
        assert abs(tv - row["mode_weight_tv"]) < 1e-9, name
    summary = json.loads((tmp_path / "dilation_path_quick_summary.json").read_text())
    assert summary["mog10d"]["best_baseline_tv"] == min(
        summary["mog10d"]["mode_weight_tv"][m]["mean"] for m in bench.BASELINES
    )
    assert "| mog10d mode_weight_tv |" in capsys.readouterr().out
