"""The dilation benchmark: the --quick smoke run (equal budgets, JSON + PNG, statistics), the table renderer,
and docs/dilation.md's tables against the committed JSON (timings are never asserted)."""

import json
import math
import pathlib
import statistics

import pytest
from scipy.stats import t as student_t

from benchmarks.dilation import report, run
from benchmarks.dilation.methods import METHODS, STEPS_PER_LEVEL

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMITTED = REPO / "benchmarks" / "results" / run.RESULTS_NAME


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    run.main(["--quick", "--output-dir", str(out)])
    return out, json.loads((out / f"quick_{run.RESULTS_NAME}").read_text())


def test_quick_run_spends_an_equal_budget_and_writes_results(quick):
    out, results = quick
    assert (out / "quick_dilation_ring6_2d.png").stat().st_size > 0
    assert (out / "quick_dilation_budget_curve.png").stat().st_size > 0
    budget = results["settings"]["budget"]
    entry = results["targets"]["ring6_2d"]
    assert len(entry["runs"]) == results["settings"]["num_seeds"] == 2
    for r in entry["runs"]:
        assert set(r["methods"]) == set(METHODS)
        for name, row in r["methods"].items():
            # every method spends at most the budget and leaves less than one path level of it unused
            assert budget - STEPS_PER_LEVEL < row["evaluations_per_sample"] <= budget, name
            assert 0.0 <= row["mode_weight_tv"] <= 1.0
            assert row["non_finite_samples"] == 0
        assert "log_z_error" in r["methods"]["dilation + reweighting"]
        assert "log_z_error" not in r["methods"]["dilation (plain)"]  # the plain path gives no estimate


def test_quick_run_statistics_are_means_with_student_t_intervals(quick):
    _, results = quick
    entry = results["targets"]["ring6_2d"]
    for metric in ("entropic_w2", "mode_weight_tv", "mmd"):
        for method in METHODS:
            values = [r["methods"][method][metric] for r in entry["runs"]]
            stat = entry["summary"][metric][method]
            assert stat["mean"] == pytest.approx(statistics.fmean(values))
            half = student_t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
            assert stat["ci95"] == pytest.approx(half)
    curve = results["budget_curve"]
    assert curve["budgets"] == [40, 60]
    assert curve["summary"]["60"] == entry["summary"]  # the main run is the curve's last point


def test_quick_run_tables_bold_the_best_method_per_column(quick):
    _, results = quick
    table = report.render_target_table(results, "ring6_2d")
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    summary = results["targets"]["ring6_2d"]["summary"]["entropic_w2"]
    best = min(METHODS, key=lambda m: summary[m]["mean"])
    assert rows[best].split(" | ")[1].startswith("**")
    others = [m for m in METHODS if report._fmt(summary[m]["mean"]) != report._fmt(summary[best]["mean"])]
    assert all(not rows[m].split(" | ")[1].startswith("**") for m in others)
    assert "exact samples (floor)" in rows


def test_renderer_on_a_hand_made_result():
    stat = lambda mean, ci=0.1: {"mean": mean, "ci95": ci, "n": 5}  # noqa: E731
    results = {
        "settings": {
            "methods": ["A", "B"],
            "budget": 10,
            "num_samples": 5,
            "num_seeds": 5,
            "entropic_reg": 0.05,
        },
        "targets": {
            "toy": {
                "description": "toy",
                "kind": "funnel",
                "dim": 2,
                "log_Z": 0.0,
                "summary": {
                    "sliced_ks": {"A": stat(0.5), "B": stat(0.25), report.EXACT: stat(0.1)},
                    "mmd": {"A": stat(0.123456), "B": stat(0.2), report.EXACT: stat(0.01)},
                    "log_z_error": {"A": None, "B": stat(1.0), report.EXACT: None},
                    "effective_sample_size": {"A": None, "B": stat(40.0), report.EXACT: None},
                },
            }
        },
    }
    lines = report.render_target_table(results, "toy").splitlines()
    assert lines[2] == "| method | sliced KS | MMD | abs. log Z error | ESS |"
    assert lines[4] == "| A | 0.500 ± 0.10 | **0.123 ± 0.10** | – | – |"
    assert lines[5] == "| B | **0.250 ± 0.10** | 0.200 ± 0.10 | **1.00 ± 0.10** | 40 |"
    assert lines[6] == "| exact samples (floor) | 0.100 ± 0.10 | 0.0100 ± 0.10 | – | – |"


def test_replace_marked_block():
    text = f"a\n{report.TABLES_BEGIN}\nold\n{report.TABLES_END}\nb"
    new = report.replace_marked_block(text, "new")
    assert new == f"a\n{report.TABLES_BEGIN}\nnew\n{report.TABLES_END}\nb"
    assert report.marked_block(new) == "new"
    with pytest.raises(ValueError, match="markers"):
        report.replace_marked_block("no markers", "x")


def test_docs_tables_are_the_committed_results():
    """docs/dilation.md quotes exactly the tables and acceptance checks rendered from the committed JSON."""
    results = json.loads(COMMITTED.read_text())
    docs = (REPO / "docs" / "dilation.md").read_text()
    assert report.marked_block(docs) == report.render_tables(results)
    assert report.marked_block(docs, run.ACCEPTANCE_BEGIN, run.ACCEPTANCE_END) == report.render_acceptance(
        results
    )
    assert results["acceptance"] == report.acceptance(results)
    settings = results["settings"]
    assert settings["num_seeds"] == 5 and settings["methods"] == list(METHODS)
    for name, entry in results["targets"].items():
        for r in entry["runs"]:
            for method, row in r["methods"].items():
                assert (
                    settings["budget"] - STEPS_PER_LEVEL < row["evaluations_per_sample"] <= settings["budget"]
                ), (
                    name,
                    method,
                )


def test_summary_table_names_the_best_method_and_both_dilation_variants():
    stat = lambda mean: {"mean": mean, "ci95": None, "n": 1}  # noqa: E731
    methods = ["ULA", "PT", "dilation (plain)", "dilation + reweighting"]
    results = {
        "settings": {"methods": methods},
        "targets": {
            "toy": {
                "kind": "mixture",
                "summary": {
                    "entropic_w2": {
                        "ULA": stat(9.0),
                        "PT": stat(4.0),
                        "dilation (plain)": stat(7.0),
                        "dilation + reweighting": stat(3.0),
                    }
                },
            }
        },
    }
    lines = report.render_summary_table(results).splitlines()
    assert lines[2] == "| toy | entropic W2 | dilation + reweighting | **3.00** | 7.00 | PT: 4.00 |"


def test_verdict_names_the_wins_the_losses_and_the_plain_path_check():
    stat = lambda mean: {"mean": mean, "ci95": None, "n": 1}  # noqa: E731
    methods = ["ULA", "SMC", "dilation (plain)", "dilation + reweighting"]

    def mixture(w2, tv):
        return {
            "kind": "mixture",
            "summary": {
                "entropic_w2": {m: stat(v) for m, v in zip(methods, w2)},
                "mode_weight_tv": {m: stat(v) for m, v in zip(methods, tv)},
            },
        }

    results = {
        "settings": {"methods": methods, "unequal_weight_mixtures": ["a", "b"]},
        "targets": {
            "a": mixture([9.0, 4.0, 7.0, 3.0], [0.8, 0.1, 0.2, 0.01]),  # extension best; plain 0.25 of ULA's
            "b": mixture([9.0, 2.0, 7.0, 3.0], [0.2, 0.1, 0.15, 0.01]),  # SMC best; plain 0.75 of ULA's
        },
    }
    assert report.render_verdict(results) == (
        "**Wins** (best headline metric): a (dilation + reweighting). **Loses** (best method in brackets): b (SMC). "
        "**The plain path alone** (no reweighting) has at most half of ULA's mode-weight TV on a, but not on "
        "b (0.75 of ULA's)."
    )
