"""The `diffusers-smd` command: help of every subcommand, train launching, sample, eval, quickstart."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from training_helpers import tiny_flags

from diffusers_smd import cli
from diffusers_smd.training import main as train_main
from diffusers_smd.training_config import parse_args

SUBCOMMANDS = ["train", "sample", "eval", "publish", "quickstart"]


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
        "sample": ["--scheduler", "--num_inference_steps", "--output"],
        "eval": ["--num_images", "--results_file"],
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
    _, env = cli.launch_command(launch, [])
    assert env["ACCELERATE_USE_CPU"] == "true"


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
    train_main(
        parse_args(
            tiny_flags(
                out, "--objective", "smd", "--etsdm", "--max_train_steps", "1", "--etsdm_intervals", "2"
            )
        )
    )
    return out


def test_sample_writes_a_reproducible_grid_and_never_overwrites(trained_pipeline, tmp_path, capsys):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    flags = [str(trained_pipeline), "--num_images", "4", "--num_inference_steps", "2", "--seed", "3"]
    assert cli.main(["sample", *flags, "--output", str(first)]) == 0
    assert str(first) in capsys.readouterr().out
    assert cli.main(["sample", *flags, "--output", str(second), "--upscale", "2"]) == 0
    grid = np.asarray(Image.open(first).convert("L"))
    assert grid.shape == (16, 16)  # a 2 x 2 grid of 8 x 8 images
    big = np.asarray(Image.open(second).convert("L"))
    assert big.shape == (32, 32) and np.array_equal(big[::2, ::2], grid)  # same seed, same images
    before = first.read_bytes()
    assert cli.main(["sample", *flags, "--output", str(first), "--seed", "4"]) == 2
    assert "--overwrite" in capsys.readouterr().err and first.read_bytes() == before
    assert cli.main(["sample", *flags, "--output", str(first), "--seed", "4", "--overwrite"]) == 0
    assert first.read_bytes() != before


@pytest.mark.parametrize(
    "scheduler", ["ddpm", "ddim", "dpmsolver++", "unipc", "etsdm-ddim", "etsdm-dpmsolver++"]
)
def test_sample_with_each_scheduler(trained_pipeline, tmp_path, scheduler):
    output = tmp_path / f"{scheduler}.png"
    assert cli.main(["sample", str(trained_pipeline), "--scheduler", scheduler, "--num_images", "2",
                     "--num_inference_steps", "2", "--output", str(output)]) == 0  # fmt: skip
    assert Image.open(output).size == (16, 8)


def test_auto_scheduler_follows_how_the_model_was_trained(trained_pipeline):
    config = json.loads((trained_pipeline / "scheduler" / "scheduler_config.json").read_text())
    scheduler, name = cli.make_scheduler("auto", config)
    assert name == "etsdm-dpmsolver++" and type(scheduler).__name__ == "ETSDMDPMSolverMultistepScheduler"
    assert scheduler.config.etsdm_threshold == config["etsdm_threshold"]
    config.pop("etsdm_threshold")
    assert cli.make_scheduler("auto", config)[1] == "dpmsolver++"


def test_multistep_solvers_clip_like_the_training_scheduler():
    from diffusers import DDPMScheduler

    clipping = DDPMScheduler(clip_sample=True, clip_sample_range=1.5).config
    for name in ("dpmsolver++", "etsdm-dpmsolver++", "unipc"):
        scheduler, _ = cli.make_scheduler(name, clipping)
        assert scheduler.config.thresholding and scheduler.config.sample_max_value == 1.5
    scheduler, _ = cli.make_scheduler("dpmsolver++", DDPMScheduler(clip_sample=False).config)
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
    assert cli.main([*flags, "--scheduler", "ddim"]) == 0  # another setting: added
    assert len(json.loads((trained_pipeline / "eval_results.json").read_text())) == 4


def test_quickstart_picks_a_fresh_folder_and_refuses_a_non_empty_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.pick_output_dir(None) == "smd-quickstart"
    os.makedirs("smd-quickstart")
    assert cli.pick_output_dir(None) == "smd-quickstart"  # empty: usable
    (tmp_path / "smd-quickstart" / "model_index.json").write_text("{}")
    assert cli.pick_output_dir(None) == "smd-quickstart-2"
    with pytest.raises(cli.CLIError, match="--output_dir"):
        cli.pick_output_dir("smd-quickstart")
    assert cli.main(["quickstart", "--output_dir", "smd-quickstart"]) == 2
    assert (tmp_path / "smd-quickstart" / "model_index.json").read_text() == "{}"


def test_quickstart_end_to_end_with_few_steps(tmp_path, capsys):
    out = tmp_path / "qs"
    assert cli.main(["quickstart", "--output_dir", str(out), "--max_train_steps", "2", "--num_images", "4",
                     "--eval_images", "0"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    grids = sorted(p for p in os.listdir(out) if p.startswith("grid_"))
    assert grids == ["grid_etsdm-ddim_50steps.png", "grid_etsdm-dpmsolver++_10steps.png"]
    for name in grids:
        assert str(out / name) in printed
        assert Image.open(out / name).size == (2 * 16 * 4, 2 * 16 * 4)  # 2 x 2 images of 16 px, upscaled 4x
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["objective"] == "smd" and summary["etsdm"]["enabled"] and summary["resolution"] == 16
    assert json.loads((out / "quickstart_timing.json").read_text())["total_seconds"] > 0
