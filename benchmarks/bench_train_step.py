"""Training step time: smd / vanilla and smd-mixture / vanilla, each a step of the package's training engine.

One "step" is :meth:`diffusers_smd.training.Trainer.step`, the engine's optimisation step: the objective
(bound once), backward through accelerate, gradient clipping, AdamW and the learning-rate schedule. The three
objectives share one UNet2DModel configuration (SMD wraps it with the identifier and hypernetworks) and one
fixed batch; their steps are timed in interleaved rounds so machine load affects them alike, and the ratio
of medians is reported. Writes benchmarks/results/train_step.json (or --output).

    python benchmarks/bench_train_step.py            # full run (digits-like 16x16, batch 64)
    python benchmarks/bench_train_step.py --quick    # seconds-long smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import torch
from diffusers import DDPMScheduler, UNet2DModel

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from diffusers_smd.losses import OBJECTIVE_NAMES, OBJECTIVES  # noqa: E402
from diffusers_smd.models import SMDUNet2DModel  # noqa: E402
from diffusers_smd.training import InMemoryTask, Trainer, TrainingConfig  # noqa: E402

TARGET_SMD_RATIO = 1.25


def build_trainer(objective: str, unet_config: dict, batch: torch.Tensor, args, output_dir: str) -> Trainer:
    """An engine Trainer for ``objective`` on the fixed ``batch`` (same UNet initialisation for every objective)."""
    torch.manual_seed(0)
    unet = UNet2DModel.from_config(unet_config)
    needs_smd = OBJECTIVES[objective].needs_mixture_model
    model = SMDUNet2DModel.from_unet(unet, latent_dim=args.latent_dim) if needs_smd else unet
    config = TrainingConfig(
        objective=objective,
        smd_mixture_samples=args.mixture_samples,
        train_batch_size=len(batch),
        learning_rate=1e-4,
        lr_scheduler="constant",
        lr_warmup_steps=0,
        max_train_steps=1,
        checkpointing_steps=10**9,
        output_dir=os.path.join(output_dir, objective),
        seed=0,
    )
    return Trainer(config, InMemoryTask(config, model, DDPMScheduler(num_train_timesteps=1000), batch))


def time_steps(trainers: dict[str, Trainer], batch: torch.Tensor, rounds: int, warmup: int = 2) -> dict:
    """Seconds of each engine step, per objective, in interleaved rounds (the first ``warmup`` are dropped)."""
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for round_index in range(rounds + warmup):
        for name, trainer in trainers.items():
            started = time.perf_counter()
            trainer.step({"input": batch})
            elapsed = time.perf_counter() - started
            if round_index >= warmup:
                times[name].append(elapsed)
    return times


def summarise(times: dict[str, list[float]], target: float = TARGET_SMD_RATIO) -> dict:
    """Medians and the ratios smd / vanilla and smd-mixture / vanilla, with the verdict against ``target``."""
    median = {name: statistics.median(values) for name, values in times.items()}
    ratio_smd = median["smd"] / median["vanilla"]
    return {
        "median_step_seconds": median,
        "ratio_smd_over_vanilla": ratio_smd,
        "ratio_smd_mixture_over_vanilla": median["smd-mixture"] / median["vanilla"],
        "target_smd_over_vanilla": target,
        "meets_target": ratio_smd <= target,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="Tiny model and few rounds (a smoke run).")
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--block_out_channels", default="32,64,64")
    parser.add_argument("--latent_dim", type=int, default=16)
    parser.add_argument("--mixture_samples", type=int, default=4)
    parser.add_argument(
        "--rounds", type=int, default=12, help="Timed steps per objective (after 2 warm-up steps)."
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    parser.add_argument(
        "--output", default=os.path.join(os.path.dirname(__file__), "results", "train_step.json")
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.resolution, args.batch_size, args.block_out_channels, args.latent_dim, args.rounds = (
            8,
            4,
            "8,16",
            4,
            3,
        )
        if args.output == parser.get_default("output"):
            args.output = os.path.join(os.path.dirname(__file__), "results", "train_step_quick.json")
    if args.threads:
        torch.set_num_threads(args.threads)
    widths = tuple(int(c) for c in args.block_out_channels.split(","))
    unet_config = {
        "sample_size": args.resolution,
        "in_channels": 1,
        "out_channels": 1,
        "layers_per_block": 1,
        "block_out_channels": widths,
        "down_block_types": ("DownBlock2D",) * len(widths),
        "up_block_types": ("UpBlock2D",) * len(widths),
        "norm_num_groups": 8,
    }
    batch = torch.rand(
        args.batch_size, 1, args.resolution, args.resolution, generator=torch.Generator().manual_seed(0)
    )
    batch = batch * 2 - 1
    with tempfile.TemporaryDirectory(prefix="bench-train-step-") as output_dir:
        trainers = {
            name: build_trainer(name, unet_config, batch, args, output_dir) for name in OBJECTIVE_NAMES
        }
        times = time_steps(trainers, batch, args.rounds)
        parameters = {name: sum(p.numel() for p in t.unwrapped.parameters()) for name, t in trainers.items()}
    result = {
        "benchmark": "training step time (Trainer.step: objective + backward + clip + AdamW + LR), same UNet, same run",
        "config": {
            "resolution": args.resolution,
            "batch_size": args.batch_size,
            "unet_block_out_channels": list(widths),
            "layers_per_block": 1,
            "smd_latent_dim": args.latent_dim,
            "smd_hypernet_layers": 2,
            "smd_mixture_samples": args.mixture_samples,
            "rounds": args.rounds,
            "torch_threads": torch.get_num_threads(),
            "quick": args.quick,
        },
        "parameters": parameters,
        **summarise(times),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "cpu_count": os.cpu_count()},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    for name, seconds in result["median_step_seconds"].items():
        print(f"{name:12s} median step {seconds * 1000:8.1f} ms")
    print(f"smd / vanilla         = {result['ratio_smd_over_vanilla']:.3f} (target <= {TARGET_SMD_RATIO})")
    print(f"smd-mixture / vanilla = {result['ratio_smd_mixture_over_vanilla']:.3f}")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
