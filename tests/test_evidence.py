"""The evidence studies' pure parts: configs, statistics, the exact target, the mixture spread, resumable units,
tables from the JSON, and the documents' generated blocks against the committed results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler

from benchmarks.evidence import config as evidence_config
from benchmarks.evidence import documents, exact_score, mixtureness, report, stats, store, worker
from benchmarks.evidence.studies import study_of
from diffusers_smd.atomic import write_json
from diffusers_smd.dilation import GaussianMixture

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "benchmarks" / "evidence" / "studies"
DIGITS = STUDIES / "etsdm_digits.yaml"
FEWSTEP = STUDIES / "smd_fewstep.yaml"
EXACT = STUDIES / "etsdm_exact.yaml"
GPU = STUDIES / "etsdm_cifar10_gpu.yaml"


# -- configs ------------------------------------------------------------------------------------------------
def test_shipped_study_configs_validate_and_quick_overlays_merge_deeply():
    for path in (DIGITS, FEWSTEP, EXACT, GPU):
        full, quick = evidence_config.load_config(path), evidence_config.load_config(path, quick=True)
        assert full["profile"] == "full" and quick["profile"] == "quick"
        assert len(full["seeds"]) >= 5 or path == GPU  # at least 5 paired seeds per cell on the CPU studies
        assert quick["output_dir"] != full["output_dir"] and quick["work_dir"] != full["work_dir"]
    fewstep = evidence_config.load_config(FEWSTEP)
    assert {evidence_config.model_timesteps(fewstep, m) for m in fewstep["models"]} == {4, 10, 25, 1000}
    # the paper's regime: every T-step model is sampled with ancestral DDPM at T steps
    for sampler, steps, _, models in evidence_config.sampler_cells(fewstep):
        if sampler == "ddpm" and steps < 1000:
            assert all(evidence_config.model_timesteps(fewstep, m) == steps for m in models)
    quick = evidence_config.load_config(FEWSTEP, quick=True)
    assert "vanilla-T10" not in quick["models"]  # a null in the overlay removes the key
    assert (
        quick["models"]["wide-T1000"]["unet"] == fewstep["models"]["wide-T1000"]["unet"]
    )  # merged, not replaced
    assert evidence_config.load_config(EXACT, quick=True)["mixtures"].keys() == {"2d"}


def test_the_wide_baseline_matches_the_smd_parameter_count():
    """The capacity-matched vanilla UNet has at least SMD's parameters, within 3 %."""
    from diffusers import UNet2DModel

    from benchmarks.evidence.training import unet_config
    from diffusers_smd import SMDUNet2DModel

    config = evidence_config.load_config(FEWSTEP)

    def count(model):
        return sum(p.numel() for p in model.parameters())

    def build(name):
        settings = {k: v for k, v in unet_config(config, name).items() if k != "_class_name"}
        return UNet2DModel(**settings)

    smd = count(SMDUNet2DModel.from_unet(build("smd-T10"), latent_dim=config["smd"]["latent_dim"],
                                         num_hypernet_layers=config["smd"]["num_hypernet_layers"]))  # fmt: skip
    wide = count(build("wide-T10"))
    assert smd <= wide <= 1.03 * smd
    assert count(build("vanilla-T10")) < 0.92 * smd


@pytest.mark.parametrize(
    "path, change, message",
    [
        (DIGITS, {"colour": 1}, "unknown config keys"),
        (DIGITS, {"metric": "psnr"}, "metric must be one of"),
        (DIGITS, {"models": {"vanilla": {"objective": "flow", "etsdm": False}}}, "models.vanilla.objective"),
        (DIGITS, {"models": {"vanilla": {"objective": "vanilla"}}}, "models.vanilla must be"),
        (DIGITS, {"training": {"max_train_steps": 0}}, "training"),
        (DIGITS, {"training": {"steps": 10}}, "training: .*steps"),
        (DIGITS, {"sampling": {"samplers": [{"name": "heun", "steps": [5]}]}}, "sampling.samplers[0].name"),
        (DIGITS, {"sampling": {"samplers": [{"name": "ddim", "steps": [5000]}]}}, "must lie in 1..1000"),
        (DIGITS, {"lipschitz": {"t_max": 999}}, "t_max + dt"),
        (DIGITS, {"lipschitz": {"checkpoints": [1000]}}, "multiples of training.checkpointing_steps"),
        (DIGITS, {"comparisons": [{"models": ["etsdm"], "baseline": "nope"}]}, "comparisons[0]"),
        (DIGITS, {"grids": {"cells": [{"sampler": "ddim", "steps": 7}]}}, "grids.cells"),
        (DIGITS, {"seeds": [0, 0, 1]}, "must not repeat"),
        (
            FEWSTEP,
            {"sampling": {"samplers": [{"name": "ddpm", "steps": [10], "models": ["vanilla-T4"]}]}},
            "training steps of vanilla-T4",
        ),  # fmt: skip
        (FEWSTEP, {"mixture": {"models": ["vanilla-T4"]}}, "mixture.models must be SMD models"),
        (FEWSTEP, {"mixture": {"num_draws": 1}}, "num_draws must be at least 2"),
        (EXACT, {"spreads": [0.1, -1]}, "spreads"),
        (EXACT, {"mixtures": {"2d": {"layout": "ring", "dim": 2}}}, "layout must be one of"),
        (EXACT, {"sampling": {"samplers": ["ddpm"]}}, "sampling.samplers"),
        (EXACT, {"seeds": [3]}, "at least 2 different seeds"),
        (EXACT, {"training": {"learning_rate": -1.0}}, "training: --learning_rate"),
    ],
)
def test_bad_config_values_name_the_key(path, change, message):
    config = evidence_config.load_config(path)
    bad = evidence_config.deep_merge(config, change)
    if "models" in change:
        bad["models"] = change["models"]
    escaped = message.replace("[", r"\[").replace("]", r"\]").replace("+", r"\+")
    with pytest.raises(ValueError, match=escaped):
        study_of(bad).validate(bad)


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--config"):
        evidence_config.load_config(tmp_path / "missing.yaml")
    text = tmp_path / "config.txt"
    text.write_text("{}")
    with pytest.raises(ValueError, match=r"\.yaml, \.yml or \.json"):
        evidence_config.load_config(text)
    no_quick = tmp_path / "config.json"
    raw = evidence_config._read(DIGITS)
    raw.pop("quick")
    no_quick.write_text(json.dumps(raw))
    assert evidence_config.load_config(no_quick)["profile"] == "full"  # JSON works the same
    with pytest.raises(ValueError, match="quick"):
        evidence_config.load_config(no_quick, quick=True)
    raw["study"] = "movies"
    no_quick.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="study must be one of"):
        evidence_config.load_config(no_quick)


# -- statistics -------------------------------------------------------------------------------------------------
def test_paired_comparison_by_hand():
    model, baseline = [9.0, 6.0, 8.0, 7.0, 5.0], [10.0, 8.0, 9.0, 10.0, 8.0]  # differences -1 -2 -1 -3 -3
    row = stats.paired_comparison(model, baseline, "lower")
    sd = math.sqrt(
        ((-1 + 2) ** 2 * 2 + 0 + (-3 + 2) ** 2 * 2) / 4
    )  # mean -2, squared deviations 1, 0, 1, 1, 1
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t_{0.975, 4} from a table
    assert row.mean_difference == pytest.approx(-2.0)
    assert (row.ci_low, row.ci_high) == pytest.approx((-2 - half, -2 + half))
    assert row.verdict == "reproduced" and row.baseline_mean == 9.0
    assert row.relative_difference == pytest.approx(-2 / 9) and row.relative_ci[0] == pytest.approx(
        (-2 - half) / 9
    )
    assert stats.paired_comparison(model, baseline, "higher").verdict == "contradicted"
    assert stats.paired_comparison([1.0, 3.0], [2.0, 2.0], "lower").verdict == "undecided"
    assert stats.student_t_975(1) == pytest.approx(12.7062047, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        stats.paired_comparison([1.0], [2.0], "lower")
    with pytest.raises(ValueError, match="one value per seed"):
        stats.paired_comparison([1.0, 2.0], [2.0], "lower")


@pytest.mark.parametrize(
    "low, high, direction, reference, expected",
    [
        (-2, -1, "lower", 0, "reproduced"),
        (1, 2, "lower", 0, "contradicted"),
        (-1, 1, "lower", 0, "undecided"),
        (1, 2, "higher", 0, "reproduced"),
        (0.2, 0.5, "higher", 0.1, "reproduced"),
        (0.01, 0.05, "higher", 0.1, "contradicted"),
        (0.05, 0.2, "higher", 0.1, "undecided"),
    ],
)
def test_the_verdict_rule(low, high, direction, reference, expected):
    assert stats.verdict(low, high, direction, reference) == expected


# -- the exact target -------------------------------------------------------------------------------------------
def test_exact_epsilon_of_one_gaussian_by_hand():
    """One component N(m, s^2 I): eps*(x) = sqrt(1 - abar) (x - a m) / (a^2 s^2 + 1 - abar)."""
    mixture = GaussianMixture(torch.tensor([[0.5, -1.0]]), None, 0.2**2)
    x = torch.tensor([[0.3, 0.1], [-1.0, 2.0]], dtype=torch.float64)
    for alpha_bar in (0.9999, 0.5, 0.01):
        a, var = math.sqrt(alpha_bar), 1 - alpha_bar
        expected = (
            math.sqrt(var) * (x - a * torch.tensor([0.5, -1.0], dtype=torch.float64)) / (a * a * 0.04 + var)
        )
        torch.testing.assert_close(exact_score.exact_epsilon(mixture, x, alpha_bar), expected)


def test_exact_epsilon_is_the_posterior_mean_of_the_noise():
    """Two components, written out: E[eps | x_t] = sum_k r_k(x_t) E[eps | x_t, k] with Gaussian responsibilities."""
    means, weights, s = (
        torch.tensor([[1.0, 0.0], [-1.0, 0.5]], dtype=torch.float64),
        torch.tensor([0.3, 0.7]),
        0.1,
    )
    mixture = GaussianMixture(means, weights, s**2)
    x, alpha_bar = torch.tensor([[0.2, 0.1], [-0.9, 0.4]], dtype=torch.float64), 0.8
    a = math.sqrt(alpha_bar)
    total = a * a * s * s + (1 - alpha_bar)
    log_r = torch.log(weights.double())[None] - ((x[:, None] - a * means[None]) ** 2).sum(-1) / (2 * total)
    r = torch.softmax(log_r, dim=1)
    per_component = math.sqrt(1 - alpha_bar) * (x[:, None] - a * means[None]) / total
    torch.testing.assert_close(
        exact_score.exact_epsilon(mixture, x, alpha_bar), (r[..., None] * per_component).sum(1)
    )


def test_alpha_bar_at_follows_the_euler_schedulers_sigmas():
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(7)
    for t, sigma in zip(scheduler.timesteps.tolist(), scheduler.sigmas[:-1].tolist()):
        assert exact_score.alpha_bar_at(scheduler.alphas_cumprod, t) == pytest.approx(
            1 / (1 + sigma**2), rel=1e-5
        )
    assert exact_score.alpha_bar_at(scheduler.alphas_cumprod, 17) == pytest.approx(
        float(scheduler.alphas_cumprod[17])
    )


def test_the_reference_samplers_space_steps_like_a_saved_models(tmp_path):
    """The exact reference and the trained models get the same sampler grids (a saved config records them)."""
    from diffusers_smd import SMDVectorModel, SMDVectorPipeline
    from diffusers_smd.sampling import make_scheduler

    config = evidence_config.load_config(EXACT, quick=True)
    fresh = exact_score.noise_scheduler(config, etsdm=False)
    SMDVectorPipeline(unet=SMDVectorModel(data_dim=2, hidden_dim=8, num_layers=1, use_mixture=False),
                      scheduler=fresh).save_pretrained(tmp_path)  # fmt: skip
    saved = SMDVectorPipeline.from_pretrained(tmp_path).scheduler
    for name in ("ddim", "dpmsolver++", "euler", "unipc"):
        grids = []
        for scheduler_config in (fresh.config, saved.config):
            scheduler = make_scheduler(name, scheduler_config)[0]
            scheduler.set_timesteps(5)
            grids.append(scheduler.timesteps.tolist())
        assert grids[0] == grids[1], name


def test_sampling_the_exact_epsilon_reaches_exact_samples():
    """eps* driven by SMDVectorPipeline + DDIM at 100 steps lands near exact samples (a check of the whole path)."""
    from diffusers_smd import SMDVectorPipeline
    from diffusers_smd.dilation import sliced_wasserstein2
    from diffusers_smd.sampling import sample_batches

    mixture = exact_score.build_mixture("grid3x3", 2, 0.1)
    schedule = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    pipeline = SMDVectorPipeline(
        unet=exact_score.ExactEpsilonModel(mixture, schedule.alphas_cumprod), scheduler=schedule
    )
    pipeline.set_progress_bar_config(disable=True)
    from diffusers import DDIMScheduler

    samples = torch.from_numpy(sample_batches(pipeline, 400, 100, seed=0, batch_size=400,
                                              scheduler=DDIMScheduler.from_config(schedule.config)))  # fmt: skip
    reference = mixture.sample(400, torch.Generator().manual_seed(1)).float()
    floor = sliced_wasserstein2(mixture.sample(400, torch.Generator().manual_seed(2)).float(), reference,
                                generator=torch.Generator().manual_seed(0))  # fmt: skip
    distance = sliced_wasserstein2(samples, reference, generator=torch.Generator().manual_seed(0))
    assert distance < 2.0 * floor
    weights = mixture.mode_weights_of(samples.double())
    assert (weights - mixture.weights).abs().sum() / 2 < 0.1


# -- the mixture spread ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_posterior_mean_equals_the_ddpm_step(prediction_type):
    """mu + sigma_t z equals DDPMScheduler.step's prev_sample with the same generator (clipping included)."""
    scheduler = DDPMScheduler(
        num_train_timesteps=10, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type
    )
    scheduler.set_timesteps(5)
    generator = torch.Generator().manual_seed(0)
    x_t, output = torch.randn(3, 1, 4, 4, generator=generator), torch.randn(3, 1, 4, 4, generator=generator)
    grid = mixtureness.ddpm_grid(scheduler, 5)
    assert [t for t, _ in grid] == scheduler.timesteps.tolist() and grid[-1][1] == -1
    for t, s in grid:
        abar_t = float(scheduler.alphas_cumprod[t])
        abar_s = float(scheduler.alphas_cumprod[s]) if s >= 0 else 1.0
        step = scheduler.step(output, t, x_t, generator=torch.Generator().manual_seed(5))
        x0 = mixtureness.predicted_clean(output, x_t, abar_t, scheduler.config)
        torch.testing.assert_close(x0, step.pred_original_sample)
        mean, sigma = mixtureness.posterior_mean_and_std(x0, x_t, abar_t, abar_s)
        if s >= 0:  # diffusers draws z after the model output, from the step's generator
            z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(5))
            torch.testing.assert_close(mean + sigma * z, step.prev_sample, rtol=1e-5, atol=1e-6)
        else:
            assert sigma == 0.0
            torch.testing.assert_close(mean, step.prev_sample)


class _EtaModel(torch.nn.Module):
    """output = 0.3 x + c * eta: the step's mean moves with eta by a known linear factor."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, sample, timestep, mixture_noise=None):
        from types import SimpleNamespace

        return SimpleNamespace(sample=0.3 * sample + self.c * mixture_noise)


def test_mixture_spread_recomputed_from_the_same_draws():
    scheduler = DDPMScheduler(num_train_timesteps=4, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    clean = torch.rand(5, 1, 2, 2) * 2 - 1
    rows = mixtureness.mixture_spread(_EtaModel(0.2), scheduler, clean, 4, num_draws=6, seed=1)
    generator = torch.Generator().manual_seed(1)
    torch.randn(clean.shape, generator=generator)  # the forward-process noise is drawn first
    for row in rows:
        t, s = row["t"], row["s"]
        abar_t, abar_s = (
            float(scheduler.alphas_cumprod[t]),
            (float(scheduler.alphas_cumprod[s]) if s >= 0 else 1.0),
        )
        etas = torch.stack([torch.randn(clean.shape, generator=generator) for _ in range(6)])
        # eps = 0.3 x + 0.2 eta -> x0 = (x - sqrt(1-abar) eps) / sqrt(abar); mu linear in x0 with coefficient A
        coefficient = math.sqrt(abar_s) * (1 - abar_t / abar_s) / (1 - abar_t)
        eta_factor = coefficient * math.sqrt(1 - abar_t) * 0.2 / math.sqrt(abar_t)
        expected = (eta_factor * etas).var(dim=0).flatten(1).mean(1).sqrt().mean().item()
        assert row["spread"] == pytest.approx(expected, rel=1e-4)
        if s >= 0:
            assert row["ratio"] == pytest.approx(expected / row["sigma"], rel=1e-4)
    assert mixtureness.mixture_spread(_EtaModel(0.0), scheduler, clean, 4, 3)[0]["spread"] == 0.0


# -- units and resumability -------------------------------------------------------------------------------------------
def _quick(path: Path, tmp_path: Path) -> dict:
    config = evidence_config.load_config(path, quick=True)
    config["work_dir"] = str(tmp_path / "work")
    config["output_dir"] = str(tmp_path / "out")
    return config


def test_image_units_cover_every_model_cell_curve_and_mixture(tmp_path):
    config = _quick(FEWSTEP, tmp_path)
    units = store.plan_units(config)
    models, seeds = config["models"], config["seeds"]
    cells = sum(len(s) * len(m) for _, _, s, m in evidence_config.sampler_cells(config))
    mixture = len(config["mixture"]["models"]) * len(config["mixture"]["seeds"])
    assert len(units) == len(models) * len(seeds) + cells + mixture
    assert len({u.name for u in units}) == len(units)
    digits = _quick(DIGITS, tmp_path)
    kinds = [u.kind for u in store.plan_units(digits)]
    lipschitz = len(digits["lipschitz"]["models"]) * len(digits["lipschitz"]["seeds"])
    assert kinds.count("lipschitz") == lipschitz
    assert kinds.count("lipschitz-checkpoint") == lipschitz * len(digits["lipschitz"]["checkpoints"])
    exact = _quick(EXACT, tmp_path)
    exact_units = exact_score.plan_units(exact)
    assert [u.kind for u in exact_units].count("reference") == len(exact["spreads"]) * len(exact["mixtures"])
    assert len({u.name for u in exact_units}) == len(exact_units)


def _fake_run_unit(config, ran):
    def run_unit(config_, unit, work_dir):
        for need in unit.needs:
            assert any(u.name == need and store.unit_done(u, work_dir) for u in store.plan_units(config))
        ran.append(unit.name)
        write_json(unit.result_path(work_dir), {"unit": unit.name})

    return run_unit


def test_units_run_once_after_their_training_and_a_rerun_skips_finished_work(tmp_path, monkeypatch):
    config = _quick(FEWSTEP, tmp_path)
    work_dir = Path(config["work_dir"])
    units = store.plan_units(config)
    ran = []
    monkeypatch.setattr(worker, "run_unit", _fake_run_unit(config, ran))
    assert worker.worker_loop(config, work_dir, log=lambda *a, **k: None) == len(units)
    assert sorted(ran) == sorted(u.name for u in units)
    victim = next(u for u in units if u.kind == "mixture")  # "killed" before its result was written
    victim.result_path(work_dir).unlink()
    store.clear_claims(work_dir)
    ran.clear()
    assert worker.worker_loop(config, work_dir, log=lambda *a, **k: None) == 1 and ran == [victim.name]


def test_blocked_and_claimed_units_are_not_handed_out(tmp_path):
    config = _quick(DIGITS, tmp_path)
    work_dir = Path(config["work_dir"])
    units = [u for u in store.plan_units(config) if u.model == "vanilla" and u.seed == 0]
    train, sample = units[0], units[1]
    assert train.kind == "train" and sample.needs == (train.name,)
    assert store.next_unit([sample], work_dir) == (None, True)  # waits for its training
    assert store.next_unit(units, work_dir) == (train, False)
    assert not store.try_claim(train, work_dir)  # claimed once only
    write_json(train.result_path(work_dir), {})
    assert store.next_unit(units, work_dir)[0] == sample


def test_work_dir_refuses_results_of_other_settings(tmp_path):
    config = _quick(FEWSTEP, tmp_path)
    work_dir = Path(config["work_dir"])
    store.check_work_dir_settings(config, work_dir)  # records
    # execution settings, extra seeds and an added model are fine
    more = evidence_config.deep_merge(config, {"workers": 3, "seeds": [0, 1, 2]})
    more["models"]["extra"] = {"objective": "vanilla", "etsdm": False}
    store.check_work_dir_settings(more, work_dir)
    with pytest.raises(ValueError, match=r"changed: \['training'\]"):
        store.check_work_dir_settings(
            evidence_config.deep_merge(config, {"training": {"max_train_steps": 7}}), work_dir
        )
    with pytest.raises(ValueError, match=r"models.smd-T4"):
        store.check_work_dir_settings(
            evidence_config.deep_merge(config, {"models": {"smd-T4": {"num_train_timesteps": 5}}}), work_dir
        )


def test_models_are_trained_by_the_engine_with_their_own_settings(tmp_path):
    from benchmarks.evidence.training import TRAIN_SMD_SCRIPT, training_config, unet_config
    from diffusers_smd.training import UnconditionalTrainingConfig, config_to_argv, parse_config

    assert TRAIN_SMD_SCRIPT.is_file()
    config = evidence_config.load_config(FEWSTEP)
    for name, spec in config["models"].items():
        settings = training_config(config, name, 2, tmp_path / "out", tmp_path / "unet")
        assert settings.objective == spec["objective"] and settings.etsdm is False
        assert settings.ddpm_num_steps == spec["num_train_timesteps"]
        assert (
            settings.ddpm_beta_schedule == "squaredcos_cap_v2" and settings.prediction_type == "v_prediction"
        )
        assert (settings.seed, settings.max_train_steps) == (2, config["training"]["max_train_steps"])
        assert settings.resume_from_checkpoint == "latest" and settings.dataset_name == "digits"
        assert parse_config(UnconditionalTrainingConfig, config_to_argv(settings)) == settings
    assert unet_config(config, "wide-T4")["block_out_channels"] == [10, 16]
    assert unet_config(config, "smd-T4")["block_out_channels"] == [8, 16]
    digits = evidence_config.load_config(DIGITS)
    etsdm = training_config(digits, "etsdm", 0, tmp_path / "out", tmp_path / "unet")
    assert (etsdm.etsdm, etsdm.etsdm_threshold, etsdm.etsdm_intervals) == (True, 100, 5)
    assert etsdm.checkpoints_total_limit is None  # K(t) during training needs every checkpoint
    gpu = evidence_config.load_config(GPU)
    settings = training_config(gpu, "etsdm", 0, tmp_path / "out", tmp_path / "unet")
    assert settings.dataset_name == "uoft-cs/cifar10" and settings.image_column == "img" and settings.etsdm


# -- tables from the JSON ------------------------------------------------------------------------------------------
def _synthetic_results() -> dict:
    config = evidence_config.load_config(DIGITS, quick=True)
    config["sampling"]["samplers"] = [{"name": "ddim", "steps": [2]}]
    fdd = {("vanilla", 0): 10.0, ("vanilla", 1): 14.0, ("etsdm", 0): 9.0, ("etsdm", 1): 12.0}
    cells = [{"model": m, "seed": s, "sampler": "ddim", "steps": 2, "num_samples": 16, "fdd": v,
              "class_tv_distance": 0.1, "class_histogram": [0.1] * 10} for (m, s), v in fdd.items()]  # fmt: skip
    lipschitz = []
    for (model, seed), scale in {
        ("vanilla", 0): 1.0,
        ("vanilla", 1): 1.2,
        ("etsdm", 0): 0.5,
        ("etsdm", 1): 0.7,
    }.items():
        values = [scale * (2.0 if t < 10 else 1.0) for t in range(21)]
        lipschitz.append({"model": model, "seed": seed, "step": None, "k": {
            "timesteps": list(range(21)), "values": values, "dt": 1, "num_samples": 4, "seed": 0,
            "prediction_type": "epsilon", "num_train_timesteps": 50}})  # fmt: skip
    results = {"config": config, "metric_key": "fdd", "cells": cells, "lipschitz": lipschitz, "mixture": []}
    results["summary"] = report.summarise_cells(results)
    return results


def test_summary_and_paired_comparisons_by_hand():
    results = _synthetic_results()
    vanilla, etsdm = results["summary"]
    assert vanilla["mean"] == 12.0 and vanilla["std"] == pytest.approx(2 * math.sqrt(2))
    comparisons = report.compare(results)
    fdd = next(q for q in comparisons["quality"] if q["metric"] == "fdd")
    assert fdd["mean_difference"] == pytest.approx(-1.5)  # differences -1, -2
    half = 12.706204736 * math.sqrt(0.5) / math.sqrt(2)
    assert (fdd["ci_low"], fdd["ci_high"]) == pytest.approx((-1.5 - half, -1.5 + half))
    assert fdd["verdict"] == "undecided"
    mean_k = next(r for r in comparisons["lipschitz"] if r["measure"].startswith("mean"))
    # early mean: 2 * scale; differences 2 * (0.5 - 1.0) and 2 * (0.7 - 1.2) = -1.0 both: a zero-width interval
    assert mean_k["mean_difference"] == pytest.approx(-1.0) and mean_k["verdict"] == "reproduced"


def test_mixture_comparison_against_the_threshold():
    results = _synthetic_results()
    results["config"] = evidence_config.load_config(FEWSTEP, quick=True)
    results["cells"], results["lipschitz"] = [], []
    results["mixture"] = [{"model": m, "seed": s, "mean_ratio": r}
                          for m, values in (("smd-T4", (0.01, 0.02)), ("smd-mixture-T4", (0.5, 0.52)), ("smd-T1000", (0.05, 0.3)))
                          for s, r in enumerate(values)]  # fmt: skip
    rows = {row["model"]: row for row in report.compare(results)["mixture"]}
    assert rows["smd-T4"]["verdict"] == "contradicted" and rows["smd-mixture-T4"]["verdict"] == "reproduced"
    assert (
        rows["smd-T1000"]["verdict"] == "undecided"
        and rows["smd-T4"]["reference"] == report.MIXTURE_REFERENCE
    )


def test_documents_blocks_match_the_committed_results():
    """README's verdict table and every table of docs/evidence.md are generated from the committed JSON."""
    all_results = documents.load_all_results()
    assert set(all_results) == set(documents.STUDIES), "every study's results.json must be committed"
    readme = documents.rendered(documents.README, documents.readme_blocks(all_results))
    assert readme == documents.README.read_text(), "run: python benchmarks/evidence/documents.py"
    docs = documents.rendered(documents.DOCS, documents.docs_blocks(all_results))
    assert docs == documents.DOCS.read_text(), "run: python benchmarks/evidence/documents.py"
    rows = documents.verdict_rows(all_results)
    assert {row["verdict"] for row in rows} <= {"reproduced", "contradicted", "undecided", "mixed"}
    for name, results in all_results.items():  # every study records how long it took
        assert results["wall_clock_seconds"] > 0, name


def test_documents_check_flags_a_stale_copy_and_the_write_mends_it(tmp_path, monkeypatch, capsys):
    readme, docs = tmp_path / "README.md", tmp_path / "evidence.md"
    committed = documents.DOCS.read_text()
    readme.write_text(documents.README.read_text())
    docs.write_text(committed.replace("| **reproduced** |", "| undecided |", 1))  # a hand edit of a verdict
    monkeypatch.setattr(documents, "README", readme)
    monkeypatch.setattr(documents, "DOCS", docs)
    assert documents.main(["--check"]) == 1
    assert f"{docs} is not what the results JSON gives" in capsys.readouterr().out
    assert documents.main([]) == 0 and documents.main(["--check"]) == 0
    assert docs.read_text() == committed  # the generated block is back to what the JSON gives


def test_replace_block_names_a_missing_block():
    begin, end = documents.block_markers("x")
    assert documents.replace_block(f"a\n{begin}\nold\n{end}\nb", "x", "new") == f"a\n{begin}\nnew\n{end}\nb"
    with pytest.raises(ValueError, match="no .*x:begin"):
        documents.replace_block("nothing here", "x", "new")
