"""The E-TSDM scheduler benchmark's --quick smoke run (timings are not asserted: not a timed test)."""

import importlib.util
import json
import pathlib

from diffusers_smd import ETSDM_VARIANTS

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_etsdm_schedulers.py"


def test_quick_benchmark_writes_ratios_for_every_scheduler(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_etsdm_schedulers", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    output = tmp_path / "etsdm.json"
    bench.main(["--quick", "--output", str(output)])
    report = json.loads(output.read_text())
    assert report["quick"] is True and len(report["results"]) == len(bench.PAIRS) == 14
    assert {row["parent"] for row in report["results"]} == {p.__name__ for p in ETSDM_VARIANTS}
    for row in report["results"]:
        assert abs(row["ratio"] - row["etsdm_median_ms"] / row["parent_median_ms"]) < 1e-2
        assert row["etsdm"] == "ETSDM" + row["parent"]
    assert "ratio" in capsys.readouterr().out
