"""The E-TSDM scheduler benchmark: its arithmetic on stub timings and a --quick smoke run (no timed test)."""

import importlib.util
import json
import pathlib

import pytest

from diffusers_smd import ETSDM_VARIANTS

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_etsdm_schedulers.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_etsdm_schedulers", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_a_result_row_is_the_ratio_of_the_medians_and_of_the_minimums():
    bench = load_bench()
    row = bench.summarize_pair("DDIM", "DDIMScheduler", "ETSDMDDIMScheduler", [0.003, 0.001, 0.002],
                               [0.0024, 0.0015, 0.009])  # fmt: skip
    assert row["parent_median_ms"] == 2.0 and row["etsdm_median_ms"] == 2.4
    assert row["ratio"] == pytest.approx(1.2) and row["ratio_of_minimums"] == pytest.approx(1.5)
    assert (row["scheduler"], row["parent"], row["etsdm"]) == ("DDIM", "DDIMScheduler", "ETSDMDDIMScheduler")
    rounded = bench.summarize_pair("x", "P", "E", [3.0], [1.0])
    assert rounded["ratio"] == 0.3333 and rounded["parent_median_ms"] == 3000.0


def test_quick_benchmark_runs_every_variant_against_its_parent(tmp_path, capsys):
    bench = load_bench()
    output = tmp_path / "etsdm.json"
    bench.main(["--quick", "--output", str(output)])
    report = json.loads(output.read_text())
    assert report["quick"] is True and len(report["results"]) == len(bench.PAIRS) == 14
    assert {row["parent"] for row in report["results"]} == {p.__name__ for p in ETSDM_VARIANTS}
    assert all(row["etsdm"] == "ETSDM" + row["parent"] and row["ratio"] > 0 for row in report["results"])
    assert "ratio" in capsys.readouterr().out
