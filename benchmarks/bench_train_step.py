"""Training step time: smd / vanilla and smd-mixture / vanilla with the same UNet, in one run.

One "step" is what the training loop does per optimisation step: the objective's forward
(diffusers_smd.losses.build_objective), backward, gradient clipping and an AdamW update. The three
objectives share one UNet2DModel configuration (SMD wraps it with the identifier and hypernetworks);
their steps are timed in interleaved rounds so machine load affects them alike, and the ratio of
medians is reported. Writes benchmarks/results/train_step.json (or --output).

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
import time

import torch
from diffusers import DDPMScheduler, UNet2DModel

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from diffusers_smd.losses import build_objective  # noqa: E402
from diffusers_smd.models import SMDUNet2DModel  # noqa: E402

TARGET_SMD_RATIO = 1.25


def build(objective: str, unet_config: dict, latent_dim: int, mixture_samples: int, seed: int):
    torch.manual_seed(seed)
    unet = UNet2DModel.from_config(unet_config)
    model = unet if objective == "vanilla" else SMDUNet2DModel.from_unet(unet, latent_dim=latent_dim)
    kwargs = {"num_mixture_samples": mixture_samples} if objective == "smd-mixture" else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return model, build_objective(objective, **kwargs), optimizer


def train_step(model, objective, optimizer, scheduler, batch) -> float:
    started = time.perf_counter()
    loss = objective(model, scheduler, batch).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


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
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    batch = (
        torch.rand(
            args.batch_size, 1, args.resolution, args.resolution, generator=torch.Generator().manual_seed(0)
        )
        * 2
        - 1
    )
    names = ("vanilla", "smd", "smd-mixture")
    runs = {name: build(name, unet_config, args.latent_dim, args.mixture_samples, seed=0) for name in names}
    times = {name: [] for name in names}
    for round_index in range(args.rounds + 2):
        for name in names:
            elapsed = train_step(*runs[name], scheduler, batch)
            if round_index >= 2:
                times[name].append(elapsed)
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "benchmark": "training step time (objective forward + backward + clip + AdamW), same UNet, same run",
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
        "parameters": {name: sum(p.numel() for p in runs[name][0].parameters()) for name in names},
        "median_step_seconds": median,
        "ratio_smd_over_vanilla": median["smd"] / median["vanilla"],
        "ratio_smd_mixture_over_vanilla": median["smd-mixture"] / median["vanilla"],
        "target_smd_over_vanilla": TARGET_SMD_RATIO,
        "meets_target": median["smd"] / median["vanilla"] <= TARGET_SMD_RATIO,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "cpu_count": os.cpu_count()},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    for name in names:
        print(f"{name:12s} median step {median[name] * 1000:8.1f} ms")
    print(f"smd / vanilla         = {result['ratio_smd_over_vanilla']:.3f} (target <= {TARGET_SMD_RATIO})")
    print(f"smd-mixture / vanilla = {result['ratio_smd_mixture_over_vanilla']:.3f}")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
