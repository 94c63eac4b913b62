"""The `diffusers-smd` command: help of every subcommand, train launching, sample, eval, quickstart."""

import argparse
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sampling_reference import sampling_loop
from training_helpers import tiny_flags, train_with_flags

from diffusers_smd import cli
from diffusers_smd.cli.quickstart import pick_output_dir
from diffusers_smd.cli.train import launch_command
from diffusers_smd.sampling import make_scheduler

SUBCOMMANDS = ["train", "train-text-to-image", "sample", "eval", "lipschitz", "publish", "quickstart"]


def subparsers():
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_every_subcommand_is_registered_and_every_flag_has_help():
    choices = subparsers()
    assert sorted(choices) == sorted(SUBCOMMANDS)
    for name, parser in choices.items():
        if name == "publish":
            continue  # its flags belong to diffusers_smd.hub; see the --help test below
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help) > 10, (name, action.dest)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_of_each_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage:")
    expected = {
        "train": ["--num_processes", "--objective", "--etsdm", "--resume_from_checkpoint"],
        "train-text-to-image": [
            "--num_processes",
            "--pretrained_model_name_or_path",
            "--caption_column",
            "--rank",
        ],
        "sample": ["--scheduler", "--num_inference_steps", "--output"],
        "eval": ["--num_images", "--results_file"],
        "lipschitz": ["--data", "--t_max", "--dt", "--output", "--plot"],
        "publish": ["repo"],
        "quickstart": ["--output_dir", "--max_train_steps"],
    }[command]
    for flag in expected:
        assert flag in text


def test_console_entry_point_runs_in_a_fresh_process(subprocess_env):
    result = subprocess.run(
        [sys.executable, "-m", "diffusers_smd.cli", "--help"],
        env=subprocess_env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0
    for command in SUBCOMMANDS:
        assert command in result.stdout


def test_train_launches_two_cpu_processes_through_accelerate(tmp_path, capsys):
    assert (
        cli.main(["train", "--cpu", "--num_processes", "2", "--dry_run", "--output_dir", str(tmp_path)]) == 0
    )
    printed = capsys.readouterr().out.split()
    assert printed[1:3] == ["-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in printed and printed[printed.index("--num_processes") + 1] == "2"
    assert printed[printed.index("-m", 3) + 1] == "diffusers_smd.training"
    assert printed[-2:] == ["--output_dir", str(tmp_path)]
    launch = argparse.Namespace(config_file=None, num_processes=2, cpu=True, main_process_port=None)
    _, env = launch_command(launch, [])
    assert env["ACCELERATE_USE_CPU"] == "true"


def test_train_without_a_config_file_launches_one_process_without_accelerate_guessing(tmp_path, capsys):
    assert cli.main(["train", "--cpu", "--dry_run", "--output_dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[printed.index("--num_processes") + 1] == "1" and "--multi_gpu" not in printed
    with_config = argparse.Namespace(
        config_file=__file__, num_processes=None, cpu=True, main_process_port=None
    )
    command, _ = launch_command(with_config, [])
    assert "--num_processes" not in command  # a config file decides the process count


def test_train_rejects_bad_flags_before_launching(tmp_path, capsys):
    assert cli.main(["train", "--output_dir", str(tmp_path / "x"), "--resolution", "0"]) == 2
    assert "--resolution" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert cli.main(["train", "--config_file", str(tmp_path / "missing.yaml")]) == 2
    assert "--config_file" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["multi_gpu.yaml", "multi_node.yaml", "fsdp.yaml"])
def test_shipped_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config_from_file(os.path.join(root, "training", "accelerate_configs", name))
    expected = {"multi_gpu.yaml": "MULTI_GPU", "multi_node.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP"}[name]
    assert str(config.distributed_type).endswith(expected)
    assert config.num_processes > 1


@pytest.fixture(scope="module")
def trained_pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "pipeline"
    train_with_flags(
        tiny_flags(out, "--objective", "smd", "--etsdm", "--max_train_steps", "1", "--etsdm_intervals", "2")
    )
    return out


def test_sample_writes_a_reproducible_grid_and_never_overwrites(trained_pipeline, tmp_path, capsys):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    flags = [str(trained_pipeline), "--num_images", "4", "--num_inference_steps", "2", "--seed", "3"]
    assert cli.main(["sample", *flags, "--output", str(first)]) == 0
    assert str(first) in capsys.readouterr().out
    assert cli.main(["sample", *flags, "--output", str(second), "--upscale", "2"]) == 0
    grid = np.asarray(Image.open(first).convert("L"))
    assert grid.shape == (18, 18)  # a 2 x 2 grid of 8 x 8 images with a 2-pixel gap
    big = np.asarray(Image.open(second).convert("L"))
    assert big.shape == (34, 34)  # 16 x 16 images, same gap
    for row in range(2):
        for column in range(2):
            small = grid[row * 10 : row * 10 + 8, column * 10 : column * 10 + 8]
            large = big[row * 18 : row * 18 + 16, column * 18 : column * 18 + 16]
            assert np.array_equal(large[::2, ::2], small)  # same seed, same images
    before = first.read_bytes()
    assert cli.main(["sample", *flags, "--output", str(first), "--seed", "4"]) == 2
    assert "--overwrite" in capsys.readouterr().err and first.read_bytes() == before
    assert cli.main(["sample", *flags, "--output", str(first), "--seed", "4", "--overwrite"]) == 0
    assert first.read_bytes() != before


#: --scheduler -> its diffusers parent and the settings that make it that sampler. A solver without clip_sample
#: clips x_0 to [-1, 1] (thresholding at 1) when the training scheduler clipped to [-1, 1].
SAMPLE_PARENTS = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpmsolver++": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "clip_by_threshold": True},
    ),
    "unipc": ("UniPCMultistepScheduler", {"clip_by_threshold": True}),
    "etsdm-ddim": ("DDIMScheduler", {}),
    "etsdm-dpmsolver++": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "clip_by_threshold": True},
    ),
}


@pytest.mark.parametrize("scheduler", sorted(SAMPLE_PARENTS))
def test_sample_with_each_scheduler_matches_a_loop_with_its_parent(trained_pipeline, tmp_path, scheduler):
    """The PNG of `sample --scheduler X` against a hand-written loop with X's diffusers parent and settings.

    The model was trained with E-TSDM, so the loop conditions the network on f(t) while the parent steps on the
    real t. Only t < 5 of 50 differ, near the end, which moves this 1-step model's pixels by under one level: the
    conditioning itself is checked in float in test_pipeline_call; here the sampler each name resolves to is.
    """
    import diffusers

    from diffusers_smd import share_timesteps
    from diffusers_smd.cli.common import load_pipeline

    output = tmp_path / f"{scheduler}.png"
    assert cli.main(["sample", str(trained_pipeline), "--scheduler", scheduler, "--num_images", "2",
                     "--num_inference_steps", "20", "--output", str(output)]) == 0  # fmt: skip
    grid = np.asarray(Image.open(output).convert("L")).astype(int)
    assert grid.shape == (8, 18)  # two 8 x 8 images side by side, 2 pixels apart

    pipeline = load_pipeline(str(trained_pipeline), "cpu")
    config = dict(pipeline.scheduler.config)
    class_name, settings = SAMPLE_PARENTS[scheduler]
    settings = dict(settings)
    if (
        settings.pop("clip_by_threshold", False)
        and config["clip_sample"]
        and config["clip_sample_range"] == 1
    ):
        settings.update(thresholding=True, sample_max_value=1.0)
    parent = getattr(diffusers, class_name).from_config(config, **settings)
    threshold, intervals = config["etsdm_threshold"], config["etsdm_intervals"]
    images = sampling_loop(
        pipeline.unet, parent, 20, torch.Generator().manual_seed(0), (2, 1, 8, 8),
        condition=lambda t: share_timesteps(t, threshold, intervals),
    )  # fmt: skip
    expected = np.round(images[:, 0].numpy() * 255)
    assert np.abs(grid[:, :8] - expected[0]).max() <= 1 and np.abs(grid[:, 10:] - expected[1]).max() <= 1
    assert np.all(grid[:, 8:10] == 128)  # the gap


def test_auto_scheduler_follows_how_the_model_was_trained(trained_pipeline):
    config = json.loads((trained_pipeline / "scheduler" / "scheduler_config.json").read_text())
    scheduler, name = make_scheduler("auto", config)
    assert name == "etsdm-dpmsolver++" and type(scheduler).__name__ == "ETSDMDPMSolverMultistepScheduler"
    assert scheduler.config.etsdm_threshold == config["etsdm_threshold"]
    for key in ("etsdm_threshold", "etsdm_intervals"):  # a config that records no E-TSDM settings
        config.pop(key)
    assert make_scheduler("auto", config)[1] == "dpmsolver++"


def test_multistep_solvers_clip_x0_exactly_like_the_training_scheduler():
    """DDPM clips x_0 to [-r, r]; a multistep solver clips through thresholding only where that equals clipping."""
    from diffusers import DDIMScheduler, DDPMScheduler

    x0 = torch.tensor([0.6, 1.2, -3.0, 0.3]).reshape(1, 1, 2, 2)
    unit = DDPMScheduler(clip_sample=True, clip_sample_range=1.0).config
    for name in ("dpmsolver++", "etsdm-dpmsolver++"):
        scheduler, _ = make_scheduler(name, unit)
        clipped = scheduler._threshold_sample(x0.clone())
        assert torch.equal(clipped, x0.clamp(-1.0, 1.0))  # [0.6, 1.0, -1.0, 0.3]
    # With range 1.5 thresholding would rescale x_0 ([0.4, 0.8, -1.0, 0.2]); such solvers do not clip then,
    # while the schedulers that have clip_sample clip to [-1.5, 1.5] themselves.
    wide = DDPMScheduler(clip_sample=True, clip_sample_range=1.5).config
    scheduler, _ = make_scheduler("dpmsolver++", wide)
    assert not scheduler.config.thresholding
    ddim, _ = make_scheduler("ddim", wide)
    assert (
        isinstance(ddim, DDIMScheduler) and ddim.config.clip_sample and ddim.config.clip_sample_range == 1.5
    )
    ddim.set_timesteps(2)
    model_output = (x0 - 0.0).expand(1, 1, 2, 2)  # prediction of the sample itself
    ddim.register_to_config(prediction_type="sample")
    step = ddim.step(model_output, ddim.timesteps[-1], torch.zeros_like(x0))
    assert torch.allclose(step.pred_original_sample, torch.tensor([0.6, 1.2, -1.5, 0.3]).reshape(1, 1, 2, 2))
    scheduler, _ = make_scheduler("dpmsolver++", DDPMScheduler(clip_sample=False).config)
    assert not scheduler.config.thresholding


def test_sample_of_a_missing_pipeline_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["sample", str(tmp_path / "nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_eval_writes_and_updates_eval_results(trained_pipeline, capsys):
    flags = ["eval", str(trained_pipeline), "--num_images", "20", "--num_inference_steps", "2"]
    assert cli.main([*flags, "--scheduler", "etsdm-ddim"]) == 0
    assert "Frechet digits distance" in capsys.readouterr().out
    results = json.loads((trained_pipeline / "eval_results.json").read_text())
    assert [r["metric"] for r in results] == ["frechet_digits_distance", "class_histogram"]
    for entry in results:
        assert {"metric", "scheduler", "num_inference_steps", "value", "num_samples"} <= set(entry)
        assert (
            entry["scheduler"] == "etsdm-ddim"
            and entry["num_inference_steps"] == 2
            and entry["num_samples"] == 20
        )
    assert np.isfinite(results[0]["value"]) and results[0]["value"] > 0
    histogram = results[1]["value"]
    assert len(histogram) == 10 and abs(sum(histogram) - 1) < 1e-9
    assert min(histogram) >= 0 and all(abs(v * 20 - round(v * 20)) < 1e-9 for v in histogram)  # counts / 20

    assert cli.main([*flags, "--scheduler", "etsdm-ddim"]) == 0  # same setting: replaced, not duplicated
    assert len(json.loads((trained_pipeline / "eval_results.json").read_text())) == 2
    # a stock sampler name on an E-TSDM model is its E-TSDM variant: the same setting again
    assert cli.main([*flags, "--scheduler", "ddim"]) == 0
    assert len(json.loads((trained_pipeline / "eval_results.json").read_text())) == 2
    assert cli.main([*flags[:-1], "3", "--scheduler", "ddim"]) == 0  # another setting: added
    results = json.loads((trained_pipeline / "eval_results.json").read_text())
    assert len(results) == 4 and {r["scheduler"] for r in results} == {"etsdm-ddim"}


def _write_digit_pngs(folder, count, resolution=8):
    """The first ``count`` held-out digits as grey PNGs; returns their uint8 pixels (N, R, R)."""
    from diffusers_smd.digits import load_digits_images

    folder.mkdir()
    images, _ = load_digits_images("heldout", resolution=resolution)
    pixels = ((images[:count, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
    for index, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{index:03d}.png")
    return pixels


def test_eval_fid_and_kid_against_an_image_folder_with_a_tiny_feature_network(
    trained_pipeline, tmp_path, monkeypatch, capsys
):
    """The eval wiring (sampling, reading the folder, torchmetrics) with a tiny network in place of Inception."""
    from feature_testing import TinyFeatures, fid_by_hand, kid_by_hand

    from diffusers_smd import metrics
    from diffusers_smd.cli.common import load_pipeline
    from diffusers_smd.sampling import generate

    network = TinyFeatures()
    built = []
    monkeypatch.setattr(metrics, "check_inception_available", lambda weights_path=None: weights_path)
    monkeypatch.setattr(
        metrics,
        "inception_feature_extractor",
        lambda weights_path=None: built.append(weights_path) or network,
    )
    folder = tmp_path / "real"
    pixels = _write_digit_pngs(folder, 20)
    results = tmp_path / "eval.json"
    flags = ["--num_images", "20", "--num_inference_steps", "2", "--results_file", str(results)]
    assert cli.main(["eval", str(trained_pipeline), "--metric", "fid", "kid", "--reference", str(folder),
                     "--inception_weights", "inception.pth", *flags]) == 0  # fmt: skip
    assert built == ["inception.pth"]
    printed = capsys.readouterr().out
    assert "FID (etsdm-dpmsolver++, 2 steps, 20 samples vs 20 of" in printed and "KID (" in printed
    entries = {entry["metric"]: entry for entry in json.loads(results.read_text())}
    assert set(entries) == {"fid", "kid"}
    for entry in entries.values():
        assert (
            entry["reference"] == str(folder) and entry["num_reference"] == 20 and entry["num_samples"] == 20
        )

    # independent: the same seeded samples, the PNGs as written, the network applied by hand
    pipeline = load_pipeline(str(trained_pipeline), "cpu")
    scheduler, _ = make_scheduler("auto", pipeline.scheduler.config)
    samples = generate(pipeline, 20, 2, seed=0, scheduler=scheduler)  # uint8 (N, 8, 8, 1)
    with torch.no_grad():
        generated = network(torch.from_numpy(samples).permute(0, 3, 1, 2).repeat(1, 3, 1, 1)).double().numpy()
        real = network(torch.from_numpy(pixels)[:, None].repeat(1, 3, 1, 1)).double().numpy()
    assert entries["fid"]["value"] == pytest.approx(fid_by_hand(generated, real), rel=1e-6)
    assert entries["kid"]["value"] == pytest.approx(
        kid_by_hand(generated, real), rel=1e-6
    )  # subsets = all 20
    assert entries["kid"]["std"] == pytest.approx(0.0, abs=1e-12) and entries["kid"]["subset_size"] == 20


def test_eval_fdd_against_a_folder_of_the_heldout_digits_matches_the_builtin_reference(
    trained_pipeline, tmp_path, capsys
):
    folder = tmp_path / "heldout"
    _write_digit_pngs(folder, 359)
    results = tmp_path / "eval.json"
    flags = ["eval", str(trained_pipeline), "--num_images", "20", "--num_inference_steps", "2",
             "--results_file", str(results)]  # fmt: skip
    assert cli.main(flags) == 0
    assert cli.main([*flags, "--reference", str(folder)]) == 0
    entries = json.loads(results.read_text())
    fdd = {e["reference"]: e["value"] for e in entries if e["metric"] == "frechet_digits_distance"}
    assert set(fdd) == {"digits-heldout", str(folder)}  # two references: two entries, none replaced
    assert fdd[str(folder)] == pytest.approx(fdd["digits-heldout"], rel=1e-3)  # the PNGs are 8-bit
    assert {e["num_reference"] for e in entries} == {359}


def test_eval_fid_without_inception_weights_says_where_to_get_them_before_any_work(
    trained_pipeline, tmp_path, monkeypatch, capsys
):
    from diffusers_smd import metrics

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # an empty cache
    check_backend = metrics.check_inception_backend
    monkeypatch.setattr(
        metrics, "check_inception_backend", lambda: None
    )  # as if torch-fidelity were installed
    loaded = []
    monkeypatch.setattr("diffusers_smd.cli.evaluate.load_pipeline", lambda *args: loaded.append(args))
    results = tmp_path / "eval.json"
    for extra in ([], ["--inception_weights", str(tmp_path / "inception.pth")]):
        assert cli.main(["eval", str(trained_pipeline), "--metric", "kid", "--results_file", str(results),
                         *extra]) == 2  # fmt: skip
        error = capsys.readouterr().err
        assert metrics.INCEPTION_WEIGHTS_FILE in error and metrics.INCEPTION_WEIGHTS_URL in error
        assert str(tmp_path / "hub" / "checkpoints") in error and "--inception_weights" in error
    assert loaded == [] and not results.exists()
    monkeypatch.setattr(metrics, "check_inception_backend", check_backend)
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # not installed
    assert cli.main(["eval", str(trained_pipeline), "--metric", "fid", "--results_file", str(results)]) == 2
    error = capsys.readouterr().err
    assert "diffusers-smd[metrics]" in error and metrics.INCEPTION_WEIGHTS_URL in error  # both things to do
    assert loaded == [] and not results.exists()


def test_eval_of_one_image_is_refused_naming_the_flag_before_loading(trained_pipeline, monkeypatch, capsys):
    loaded = []
    monkeypatch.setattr("diffusers_smd.cli.evaluate.load_pipeline", lambda *args: loaded.append(args))
    assert cli.main(["eval", str(trained_pipeline), "--num_images", "1"]) == 2
    error = capsys.readouterr().err
    assert "--num_images must be at least 2" in error and "got 1" in error and "generated" not in error
    assert loaded == []  # refused before the pipeline is even loaded


def test_quickstart_picks_a_fresh_folder_and_refuses_a_non_empty_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pick_output_dir(None) == "smd-quickstart"
    os.makedirs("smd-quickstart")
    assert pick_output_dir(None) == "smd-quickstart"  # empty: usable
    (tmp_path / "smd-quickstart" / "model_index.json").write_text("{}")
    assert pick_output_dir(None) == "smd-quickstart-2"
    with pytest.raises(cli.CLIError, match="--output_dir"):
        pick_output_dir("smd-quickstart")
    assert cli.main(["quickstart", "--output_dir", "smd-quickstart"]) == 2
    assert (tmp_path / "smd-quickstart" / "model_index.json").read_text() == "{}"


def test_quickstart_end_to_end_with_few_steps(tmp_path, capsys):
    from diffusers_smd.cli.quickstart import QUICKSTART_GRID_GAP, QUICKSTART_GRID_PIXELS, QUICKSTART_SETTINGS

    out = tmp_path / "qs"
    assert cli.main(["quickstart", "--output_dir", str(out), "--max_train_steps", "2", "--num_images", "4",
                     "--eval_images", "3"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    (fdd,) = [
        e
        for e in json.loads((out / "eval_results.json").read_text())
        if e["metric"] == "frechet_digits_distance"
    ]
    assert (
        fdd["num_samples"] == 3
        and fdd["scheduler"] == "etsdm-dpmsolver++"
        and fdd["num_inference_steps"] == 10
    )
    assert lines[-1] == (
        f"Frechet digits distance (etsdm-dpmsolver++, 10 steps, 3 samples vs the 359 held-out digits): "
        f"{fdd['value']:.1f}; lower is better: real digits score about 33, noise about 1700."
    )
    grids = sorted(p for p in os.listdir(out) if p.startswith("grid_"))
    assert grids == ["grid_etsdm-ddim_50steps.png", "grid_etsdm-dpmsolver++_10steps.png"]
    resolution = QUICKSTART_SETTINGS["resolution"]
    upscale = QUICKSTART_GRID_PIXELS // resolution
    side, gap = QUICKSTART_GRID_PIXELS, QUICKSTART_GRID_GAP
    for name, steps in (
        ("grid_etsdm-dpmsolver++_10steps.png", "10 steps"),
        ("grid_etsdm-ddim_50steps.png", "50 steps"),
    ):
        (index,) = [i for i, line in enumerate(lines) if line.endswith(str(out / name))]
        caption = lines[index + 1]  # the caption line says what the grid shows
        assert f"4 new digits (2 per row, each {resolution}x{resolution} sample drawn {upscale}x" in caption
        assert steps in caption and "grey gaps" in caption
        grid = np.asarray(Image.open(out / name).convert("L"))
        assert grid.shape == (2 * side + gap, 2 * side + gap)  # 2 x 2 samples with a gap between them
        assert np.all(grid[side : side + gap] == 128) and np.all(grid[:, side : side + gap] == 128)
    summary = json.loads((out / "run_summary.json").read_text())
    assert (
        summary["objective"] == "smd" and summary["etsdm"]["enabled"] and summary["resolution"] == resolution
    )
    assert json.loads((out / "quickstart_timing.json").read_text())["total_seconds"] > 0


def test_sample_refuses_a_step_count_the_solver_cannot_run_and_writes_nothing(
    trained_pipeline, tmp_path, capsys
):
    """Issue 17, case 1: 50 DPM-Solver++ steps on a 50-timestep model gave NaN, written as a black PNG."""
    output = tmp_path / "grid.png"
    flags = ["--num_images", "2", "--num_inference_steps", "50", "--output", str(output)]
    assert cli.main(["sample", str(trained_pipeline), *flags]) == 2
    error = capsys.readouterr().err
    assert "--num_inference_steps 50" in error and "at most 49" in error
    assert not output.exists()


def test_eval_of_unusable_samples_writes_no_score(trained_pipeline, capsys):
    """Issue 17, case 2: the black images of case 1 were scored and the score written to eval_results.json."""
    results = trained_pipeline / "eval_results.json"
    before = results.read_bytes() if results.exists() else None
    assert cli.main(["eval", str(trained_pipeline), "--num_images", "20", "--num_inference_steps", "50"]) == 2
    assert "at most 49" in capsys.readouterr().err
    assert (results.read_bytes() if results.exists() else None) == before


def test_single_cpu_launch_passes_accelerates_own_thread_count_so_it_prints_no_notice(monkeypatch, caplog):
    """accelerate's validation of our argv: no "values were not passed" warning, and the threads it would have
    picked itself for the bare ``--cpu`` command."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    launch = argparse.Namespace(config_file=None, num_processes=None, cpu=True, main_process_port=None)
    command, _ = launch_command(launch, [])
    argv = command[3 : command.index("-m", 3)] + ["script.py"]
    with caplog.at_level(logging.WARNING):
        ours, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    assert "were not passed" not in caplog.text
    at = argv.index("--num_cpu_threads_per_process")
    bare = argv[:at] + argv[at + 2 :]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        theirs, _, _ = _validate_launch_command(launch_command_parser().parse_args(bare))
    assert ours.num_cpu_threads_per_process == theirs.num_cpu_threads_per_process
