"""The evidence benchmark's pure parts: config, K(t) estimator, resumable units, tables from the JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from benchmarks.evidence import config as evidence_config
from benchmarks.evidence import report, store, worker
from benchmarks.evidence.lipschitz import lipschitz_in_t, noisy_samples
from diffusers_smd import SMDPipeline
from diffusers_smd.atomic import write_json
from diffusers_smd.etsdm import share_timesteps
from diffusers_smd.sampling import sample_batches

REPO = Path(__file__).resolve().parents[1]
CPU_CONFIG = REPO / "benchmarks" / "evidence" / "digits_cpu.yaml"
GPU_CONFIG = REPO / "benchmarks" / "evidence" / "cifar10_gpu.yaml"
RESULTS = REPO / "benchmarks" / "results" / "evidence" / "evidence_results.json"
README_SECTION = REPO / "README.md"


# -- config -----------------------------------------------------------------------------------------
def test_shipped_configs_validate_and_quick_overlay_merges_deeply():
    full = evidence_config.load_config(CPU_CONFIG)
    quick = evidence_config.load_config(CPU_CONFIG, quick=True)
    assert full["profile"] == "full" and quick["profile"] == "quick"
    assert list(full["models"]) == ["vanilla", "etsdm", "smd", "smd_etsdm"]
    assert len(full["seeds"]) >= 3 and full["sampling"]["num_samples"] == 359
    # the overlay replaces what it names and keeps the rest of a section
    assert quick["unet"]["block_out_channels"] != full["unet"]["block_out_channels"]
    assert quick["unet"]["layers_per_block"] == full["unet"]["layers_per_block"]
    assert quick["output_dir"] != full["output_dir"] and quick["work_dir"] != full["work_dir"]
    cells = {(s, n) for s, n, _, _ in evidence_config.sampler_cells(full)}
    assert {("ddim", 5), ("ddim", 10), ("ddim", 20), ("ddim", 50), ("dpmsolver++", 5), ("dpmsolver++", 10),
            ("dpmsolver++", 20), ("ddpm", 1000)} <= cells  # fmt: skip
    gpu = evidence_config.load_config(GPU_CONFIG)
    assert gpu["metric"] == "fid" and gpu["data"]["dataset"] != "digits"
    assert set(gpu) - {"launcher"} == set(full)  # the same settings, other values


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": 1}, "unknown config keys"),
        ({"metric": "psnr"}, "metric must be one of"),
        ({"models": {"etsdm": {"smd": False, "etsdm": True}}}, "vanilla"),
        ({"training": {"max_train_steps": 0}}, "training.max_train_steps"),
        ({"training": {"steps": 10}}, "training: .*steps"),
        ({"training": {"learning_rate": -1.0}}, "training: --learning_rate"),
        ({"sampling": {"samplers": [{"name": "euler", "steps": [5]}]}}, "sampling.samplers[0].name"),
        ({"sampling": {"samplers": [{"name": "ddim", "steps": [5000]}]}}, "1..noise_schedule"),
        ({"lipschitz": {"t_max": 1000}}, "t_max + dt"),
        ({"grids": {"cells": [{"sampler": "ddim", "steps": 7}]}}, "grids.cells"),
        ({"seeds": [0, 0, 1]}, "must not repeat"),
    ],
)
def test_bad_config_values_name_the_key(change, message):
    config = evidence_config.load_config(CPU_CONFIG)
    bad = evidence_config.deep_merge(config, change)
    if "models" in change:
        bad["models"] = change["models"]
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("+", r"\+")):
        evidence_config.validate_config(bad)


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--config"):
        evidence_config.load_config(tmp_path / "missing.yaml")
    text = tmp_path / "config.txt"
    text.write_text("{}")
    with pytest.raises(ValueError, match=r"\.yaml, \.yml or \.json"):
        evidence_config.load_config(text)
    no_quick = tmp_path / "config.json"
    raw = evidence_config._read(CPU_CONFIG)
    raw.pop("quick")
    no_quick.write_text(json.dumps(raw))
    assert evidence_config.load_config(no_quick)["profile"] == "full"  # JSON works the same
    with pytest.raises(ValueError, match="quick"):
        evidence_config.load_config(no_quick, quick=True)


# -- K(t) ---------------------------------------------------------------------------------------------
def _linear_in_t_model(slope: float):
    """eps(x, t) = slope * t * x: its t-derivative is slope * x, so K(t) = slope * E ||x_t|| exactly."""
    return lambda x, t: slope * t * x


def test_noisy_samples_match_diffusers_add_noise():
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    clean, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    for t in (0, 17, 999):
        expected = scheduler.add_noise(clean, noise, torch.full((3,), t))
        torch.testing.assert_close(noisy_samples(clean, noise, scheduler.alphas_cumprod, t), expected)


def test_lipschitz_of_a_model_with_known_t_derivative():
    alphas_cumprod = DDPMScheduler(num_train_timesteps=100).alphas_cumprod
    generator = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(5, 2, 3, 3, generator=generator), torch.randn(5, 2, 3, 3, generator=generator)
    slope, timesteps = 0.3, [0, 1, 7, 50]
    for dt in (1, 3):
        values = lipschitz_in_t(_linear_in_t_model(slope), clean, noise, alphas_cumprod, timesteps, dt)
        for t, value in zip(timesteps, values):
            a = alphas_cumprod[t]
            x_t = a.sqrt() * clean + (1 - a).sqrt() * noise
            expected = slope * x_t.flatten(1).norm(dim=1).mean().item()  # |slope * dt * x_t| / dt
            assert value == pytest.approx(expected, rel=1e-5)


def test_lipschitz_with_the_etsdm_condition_is_zero_inside_intervals_and_the_jump_at_edges():
    alphas_cumprod = DDPMScheduler(num_train_timesteps=100).alphas_cumprod
    clean, noise = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    calls = []

    def predict(x, t):
        calls.append(t)
        return 0.5 * t * x

    condition = lambda t: int(share_timesteps(t, 10, 5))  # noqa: E731 -- 0-1 -> 0, 2-3 -> 2, ..., 10+ -> t
    values = lipschitz_in_t(predict, clean, noise, alphas_cumprod, range(0, 12), 1, condition)
    for t, value in enumerate(values):
        jump = condition(t + 1) - condition(t)
        norm = alphas_cumprod[t].sqrt().item() * 2.0  # ||x_t|| of a 2x2 image of ones, noise 0
        assert value == pytest.approx(0.5 * jump * norm, rel=1e-5)
    assert values[0] == 0.0 and values[1] > 0 and values[2] == 0.0
    assert len(calls) == 2 * sum(1 for t in range(12) if condition(t + 1) != condition(t))
    with pytest.raises(ValueError, match="dt"):
        lipschitz_in_t(predict, clean, noise, alphas_cumprod, [0], 0)


# -- sampling ---------------------------------------------------------------------------------------
def test_every_model_of_a_seed_starts_from_the_same_noise():
    """Samples come from SMDPipeline (the package's generation path): x_T depends on the seed only."""
    first_inputs = []
    for block_out_channels in ((8, 16), (16, 16)):
        unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=block_out_channels,
                           layers_per_block=1, down_block_types=("DownBlock2D",) * 2,
                           up_block_types=("UpBlock2D",) * 2, norm_num_groups=4)  # fmt: skip
        seen = []
        unet.conv_in.register_forward_pre_hook(
            lambda module, inputs, seen=seen: seen.append(inputs[0].clone())
        )
        pipeline = SMDPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=20))
        pipeline.set_progress_bar_config(disable=True)
        images = sample_batches(pipeline, 3, 2, seed=worker.initial_noise_seed(4), batch_size=2)
        assert images.shape == (3, 8, 8, 1) and images.min() >= 0.0 and images.max() <= 1.0
        first_inputs.append(torch.cat([seen[0], seen[2]]))  # x_T of both chunks
    torch.testing.assert_close(first_inputs[0], first_inputs[1], rtol=0, atol=0)


# -- resumability -------------------------------------------------------------------------------------
def _quick(tmp_path) -> dict:
    config = evidence_config.load_config(CPU_CONFIG, quick=True)
    config["work_dir"] = str(tmp_path / "work")
    return config


def _fake_run_unit(ran):
    def run_unit(config, unit, work_dir):
        for need in unit.needs:
            assert any(u.name == need and store.unit_done(u, work_dir) for u in store.plan_units(config))
        ran.append(unit.name)
        write_json(unit.result_path(work_dir), {"unit": unit.name})

    return run_unit


def test_units_run_once_after_their_training_and_a_rerun_skips_finished_work(tmp_path, monkeypatch):
    config = _quick(tmp_path)
    work_dir = Path(config["work_dir"])
    units = store.plan_units(config)
    models, seeds = len(config["models"]), len(config["seeds"])  # trainings: every model and seed
    cells = sum(len(seeds_) * len(models_) for _, _, seeds_, models_ in evidence_config.sampler_cells(config))
    lipschitz = len(config["lipschitz"]["models"]) * len(config["lipschitz"]["seeds"])
    assert len(units) == models * seeds + cells + lipschitz
    assert len({u.name for u in units}) == len(units)

    ran = []
    monkeypatch.setattr(worker, "run_unit", _fake_run_unit(ran))
    assert worker.worker_loop(config, work_dir, log=lambda *a, **k: None) == len(units)
    assert sorted(ran) == sorted(u.name for u in units)
    # a unit "killed" before its result was written is redone, nothing else
    victim = next(u for u in units if u.kind == "sample")
    victim.result_path(work_dir).unlink()
    store.clear_claims(work_dir)
    ran.clear()
    assert worker.worker_loop(config, work_dir, log=lambda *a, **k: None) == 1 and ran == [victim.name]


def test_blocked_and_claimed_units_are_not_handed_out(tmp_path):
    config = _quick(tmp_path)
    work_dir = Path(config["work_dir"])
    units = [u for u in store.plan_units(config) if u.model == "vanilla" and u.seed == 0]
    train, sample = units[0], units[1]
    assert train.kind == "train" and sample.needs == (train.name,)
    assert store.next_unit([sample], work_dir) == (None, True)  # waits for its training
    assert store.next_unit(units, work_dir) == (train, False)
    assert not store.try_claim(train, work_dir)  # claimed once only
    assert store.next_unit([train], work_dir) == (None, True)
    write_json(train.result_path(work_dir), {})
    assert store.next_unit(units, work_dir)[0] == sample


# -- report -------------------------------------------------------------------------------------------
def test_summary_means_and_relative_change_by_hand():
    config = evidence_config.load_config(CPU_CONFIG, quick=True)
    config["models"] = {"vanilla": {"smd": False, "etsdm": False}, "etsdm": {"smd": False, "etsdm": True}}
    config["sampling"]["samplers"] = [{"name": "ddim", "steps": [2]}]
    values = {("vanilla", 0): 10.0, ("vanilla", 1): 14.0, ("etsdm", 0): 9.0, ("etsdm", 1): 6.0}
    cells = [{"model": m, "seed": s, "sampler": "ddim", "steps": 2, "num_samples": 16, "fdd": v}
             for (m, s), v in values.items()]  # fmt: skip
    rows = report.summarise_cells({"config": config, "metric_key": "fdd", "cells": cells})
    vanilla, etsdm = rows
    assert vanilla["mean"] == 12.0 and vanilla["std"] == pytest.approx(2**0.5 * 2)
    assert etsdm["mean"] == 7.5 and etsdm["relative_change_vs_vanilla"] == pytest.approx(-0.375)


def test_work_dir_refuses_results_of_other_settings(tmp_path):
    config = _quick(tmp_path)
    work_dir = Path(config["work_dir"])
    store.check_work_dir_settings(config, work_dir)  # records
    more_workers = evidence_config.deep_merge(config, {"workers": 3, "seeds": [0, 1, 2]})
    store.check_work_dir_settings(more_workers, work_dir)  # execution settings and extra seeds are fine
    longer = evidence_config.deep_merge(config, {"training": {"max_train_steps": 7}})
    with pytest.raises(ValueError, match=r"changed: \['training'\]"):
        store.check_work_dir_settings(longer, work_dir)


def test_models_are_trained_by_the_engine_with_the_configs_settings(tmp_path):
    from benchmarks.evidence.training import TRAIN_SMD_SCRIPT, training_config
    from diffusers_smd.training import UnconditionalTrainingConfig, config_to_argv, parse_config

    assert TRAIN_SMD_SCRIPT.is_file()
    config = evidence_config.load_config(CPU_CONFIG)
    training = config["training"]
    for name, spec in config["models"].items():
        settings = training_config(config, name, 2, tmp_path / "out", tmp_path / "unet")
        assert settings.objective == ("smd" if spec["smd"] else "vanilla") and settings.etsdm == spec["etsdm"]
        assert (settings.seed, settings.max_train_steps, settings.train_batch_size) == (
            2,
            training["max_train_steps"],
            training["train_batch_size"],
        )
        assert (
            settings.learning_rate == training["learning_rate"]
            and settings.ema_max_decay == training["ema_max_decay"]
        )
        assert (
            settings.resolution == config["data"]["resolution"]
            and settings.num_channels == 1
            and settings.use_ema
        )
        assert settings.resume_from_checkpoint == "latest" and settings.dataset_name == "digits"
        if spec["etsdm"]:
            assert (settings.etsdm_threshold, settings.etsdm_intervals) == (100, 5)  # the paper's t~ and n
        # the multi-GPU route runs training/train_smd.py with the same settings as flags
        assert parse_config(UnconditionalTrainingConfig, config_to_argv(settings)) == settings
    gpu = evidence_config.load_config(GPU_CONFIG)
    settings = training_config(gpu, "smd_etsdm", 0, tmp_path / "out", tmp_path / "unet")
    assert settings.dataset_name == "uoft-cs/cifar10" and settings.image_column == "img"
    assert settings.smd_latent_dim == 100


def test_readme_tables_match_the_committed_results_json():
    if not RESULTS.is_file():
        pytest.fail(f"{RESULTS} must be committed with the README section")
    results = json.loads(RESULTS.read_text())
    tables = report.markdown_tables(results)
    text = README_SECTION.read_text()
    assert report.replace_marked_block(text, tables) == text, "rerun run.py --report --readme " + str(
        README_SECTION
    )
