"""The same training code on two CPU processes (DDP over gloo), launched by `diffusers-smd train`."""

import json
import os
import subprocess
import sys

from training_helpers import tiny_flags


def test_two_cpu_processes_train_checkpoint_and_save_a_loadable_pipeline(tmp_path, subprocess_env):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "diffusers_smd.cli", "train", "--cpu", "--num_processes", "2",
        *tiny_flags(out, "--objective", "smd", "--etsdm", "--etsdm_threshold", "10", "--etsdm_intervals", "2",
                    "--max_train_steps", "2", "--checkpointing_steps", "2", "--use_ema"),
    ]  # fmt: skip
    result = subprocess.run(command, env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]

    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["num_processes"] == 2
    assert summary["total_batch_size"] == 2 * 4 and summary["global_step"] == 2
    checkpoint = out / "checkpoint-2"
    assert {"random_states_0.pkl", "random_states_1.pkl", "optimizer.bin", "unet", "unet_ema"} <= set(
        os.listdir(checkpoint)
    )

    # A fresh process loads the pipeline the stock diffusers way and generates.
    load = (
        "import sys, torch, diffusers_smd\n"
        "from diffusers import DiffusionPipeline\n"
        "pipe = DiffusionPipeline.from_pretrained(sys.argv[1])\n"
        "images = pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type='np').images\n"
        "print(type(pipe).__name__, type(pipe.unet).__name__, type(pipe.scheduler).__name__, images.shape)\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", load, str(out)], env=subprocess_env, capture_output=True, text=True
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split()[:3] == ["SMDPipeline", "SMDUNet2DModel", "ETSDMDDPMScheduler"]
    assert "(2, 8, 8, 1)" in loaded.stdout
