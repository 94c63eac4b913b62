"""The ring study (benchmarks/dilation/ring_study.py): the tempered-mass formula against quadrature, its
inverse, the quick run against the main benchmark's quick run, and docs/dilation.md against the committed JSON."""

import json
import math
import pathlib

import pytest
import torch

from benchmarks.dilation import report, ring_study, run
from diffusers_smd.dilation import GaussianMixture

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMITTED_STUDY = REPO / "benchmarks" / "results" / ring_study.RESULTS_NAME
COMMITTED_MAIN = REPO / "benchmarks" / "results" / run.RESULTS_NAME


def test_tempered_tv_on_a_hand_computed_case():
    w = torch.tensor([1.0, 3.0]) / 4
    # T = 2: masses (1, sqrt 3) / (1 + sqrt 3); TV = 1 / (1 + sqrt 3) - 1 / 4
    assert ring_study.tempered_tv(w, 2.0) == pytest.approx(1 / (1 + math.sqrt(3)) - 0.25, abs=1e-12)
    assert ring_study.tempered_tv(w, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert ring_study.tempered_tv(w, 1e9) == pytest.approx(0.25, abs=1e-8)  # the uniform guess


def test_tempered_weights_are_the_masses_of_the_tempered_density_by_quadrature():
    """1-D mixture 0.2 N(-10, 1) + 0.8 N(10, 1): the mass of pi^(1/T) on x > 0, by the trapezoid rule."""
    mixture = GaussianMixture(torch.tensor([[-10.0], [10.0]]), torch.tensor([0.2, 0.8]), covariances=1.0)
    x = torch.linspace(-60, 60, 240_001, dtype=torch.float64)[:, None]
    for temperature in (1.0, 2.0, 5.0):
        density = (mixture.log_prob(x) / temperature).exp()
        right = torch.trapezoid(density * (x[:, 0] > 0), x[:, 0]) / torch.trapezoid(density, x[:, 0])
        expected = ring_study.tempered_weights(mixture.weights, temperature)[1]
        assert float(right) == pytest.approx(float(expected), abs=1e-6)


def test_temperature_for_tv_inverts_tempered_tv_and_rejects_unreachable_values():
    w = torch.arange(1, 7, dtype=torch.float64) / 21
    for temperature in (1.3, 2.0, 7.5):
        tv = ring_study.tempered_tv(w, temperature)
        assert ring_study.temperature_for_tv(w, tv) == pytest.approx(temperature, rel=1e-9)
    with pytest.raises(ValueError, match="tv must lie in"):
        ring_study.temperature_for_tv(w, 0.5)


def test_crossing_on_a_single_gaussian_never_changes_mode():
    one = GaussianMixture(torch.zeros(1, 2, dtype=torch.float64), torch.ones(1), covariances=1.0)
    row = ring_study.crossing(one, 2.0, n=50, budget=20, seed=0)
    assert row["changed_mode"] == 0.0 and row["mode_weight_tv"] == pytest.approx(0.0, abs=1e-12)
    assert 0.0 < row["acceptance"] <= 1.0


def test_initial_temperature_of_the_scheduler_settings():
    assert ring_study.initial_temperature({}) == pytest.approx(50.0)  # default initial_step_size 1.96
    assert ring_study.initial_temperature({"initial_step_size": 1.5}) == pytest.approx(4.0)
    assert ring_study.initial_temperature({"initial_step_size": None}) is None


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("ring_quick")
    study = run.main(["--ring-study", "--quick", "--output-dir", str(out)])
    main = run.main(["--quick", "--output-dir", str(out), "--methods", "ULA", "dilation (plain)"])
    return study, main, json.loads((out / f"quick_{ring_study.RESULTS_NAME}").read_text())


def test_quick_study_reproduces_the_main_benchmark_and_is_written(quick):
    study, main, written = quick
    assert written["sweep"] == study["sweep"]
    defaults = next(r for r in study["sweep"] if r["setting"] == "defaults")
    runs = main["targets"]["ring6_2d"]["runs"]
    # the same seeds, sample size and budget through the two commands give the same mode masses
    assert defaults["ring6_2d"]["values"] == [
        r["methods"]["dilation (plain)"]["mode_weight_tv"] for r in runs
    ]
    assert study["ula"]["ring6_2d"]["values"] == [r["methods"]["ULA"]["mode_weight_tv"] for r in runs]
    for row in study["sweep"]:
        for target in study["settings"]["targets"]:
            assert row[target]["ratio_to_ula"] == pytest.approx(
                row[target]["mean"] / study["ula"][target]["mean"]
            )
        assert row["met_everywhere"] == all(
            row[t]["ratio_to_ula"] <= 0.5 for t in study["settings"]["targets"]
        )
    assert [r["setting"] for r in study["start_check"]] == ["defaults", "energy_window_start=0"]
    assert all(0 < r["modes_found"]["mean"] <= 40 for r in study["start_check"])
    half = study["ula"]["ring6_2d"]["mean"] / 2
    assert ring_study.tempered_tv(torch.arange(1, 7.0) / 21, study["freeze_temperature_for_half_ula"]) == (
        pytest.approx(half)
    )


def test_docs_ring_study_is_the_committed_json_and_agrees_with_the_main_benchmark():
    study = json.loads(COMMITTED_STUDY.read_text())
    main = json.loads(COMMITTED_MAIN.read_text())
    docs = (REPO / "docs" / "dilation.md").read_text()
    assert report.marked_block(docs, ring_study.BEGIN, ring_study.END) == ring_study.render(study)
    assert [label for label, _ in ring_study.SETTINGS] == [r["setting"] for r in study["sweep"]]
    s, ms = study["settings"], main["settings"]
    assert (s["seeds"], s["num_samples"], s["budget"]) == (ms["seeds"], ms["num_samples"], ms["budget"])
    defaults = next(r for r in study["sweep"] if r["setting"] == "defaults")
    for target in s["targets"]:
        runs = main["targets"][target]["runs"]
        # the study's default plain path and ULA are the committed benchmark's runs, value for value
        assert defaults[target]["values"] == [
            r["methods"]["dilation (plain)"]["mode_weight_tv"] for r in runs
        ]
        assert study["ula"][target]["values"] == [r["methods"]["ULA"]["mode_weight_tv"] for r in runs]
