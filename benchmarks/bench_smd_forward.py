"""Speed, memory and parameter overhead of SMDUNet2DModel against the UNet2DModel it wraps (CPU).

One run compares the two: forward passes are interleaved (plain, SMD, plain, SMD, ...) and the medians
are compared, so load on the machine hits both alike. Configuration: DDPM CIFAR-10 (google/ddpm-cifar10-32
layout: block_out_channels (128, 256, 256, 256), attention at 16x16, 2 layers per block), 32x32, batch 8,
latent_dim 100, 2 hypernetwork layers, identifier at its default size (1/4 width, two stages).

Peak memory: each model runs one forward in its own fresh Python process; the figure is the growth of the
process's peak resident set size (``ru_maxrss``) during that forward, i.e. the activation memory on top of
weights and inputs. Repeated and the median taken.

    python benchmarks/bench_smd_forward.py            # full run, writes benchmarks/results/smd_forward.json
    python benchmarks/bench_smd_forward.py --quick    # seconds-long smoke run
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
from diffusers import UNet2DModel

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from diffusers_smd.models import SMDUNet2DModel  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"

DDPM_CIFAR10 = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2,
    attention_head_dim=None,
    norm_eps=1e-6,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
)
QUICK = dict(DDPM_CIFAR10, sample_size=16, block_out_channels=(32, 64, 64, 64))


def setting(quick: bool) -> dict:
    return {
        "unet": QUICK if quick else DDPM_CIFAR10,
        "batch_size": 2 if quick else 8,
        "latent_dim": 16 if quick else 100,
        "num_hypernet_layers": 2,
    }


def build(quick: bool) -> tuple[UNet2DModel, SMDUNet2DModel, torch.Tensor, torch.Tensor]:
    cfg = setting(quick)
    torch.manual_seed(0)
    unet = UNet2DModel(**cfg["unet"]).eval()
    smd = SMDUNet2DModel.from_unet(
        unet, latent_dim=cfg["latent_dim"], num_hypernet_layers=cfg["num_hypernet_layers"]
    ).eval()
    size = cfg["unet"]["sample_size"]
    sample = torch.randn(cfg["batch_size"], 3, size, size)
    timestep = torch.randint(0, 1000, (cfg["batch_size"],))
    return unet, smd, sample, timestep


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def interleaved_medians(calls: dict, repeats: int, warmup: int, clock=time.perf_counter) -> dict:
    """Median seconds of each call: ``warmup`` untimed rounds, then ``repeats`` rounds that call each in turn
    (a, b, c, a, b, c, ...), so load on the machine hits all alike. ``clock`` returns seconds."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


@torch.no_grad()
def time_forwards(unet, smd, sample, timestep, repeats: int, warmup: int) -> dict:
    eta = torch.randn_like(sample)
    calls = {
        "unet": lambda: unet(sample, timestep),
        "smd": lambda: smd(sample, timestep),
        # Parts of the SMD overhead, timed alone (same interleaving).
        "identifier": lambda: smd.identifier(sample, timestep, eta),
    }
    latent = smd.identifier(sample, timestep, eta)
    features = smd.unet.conv_in(sample)
    calls["hypernetworks"] = lambda: (smd.hypernet_in(features, latent), smd.hypernet_out(features, latent))
    return interleaved_medians(calls, repeats, warmup)


def summarize_times(times: dict, parameters: dict) -> dict:
    """The ratios the benchmark reports, from median seconds (``unet``, ``smd``, ``identifier``,
    ``hypernetworks``) and parameter counts (``unet``, ``smd``, ``identifier``, ``hypernetworks``)."""
    return {
        "median_seconds": times,
        "time_ratio": times["smd"] / times["unet"],
        "time_ratio_target": 1.10,
        "overhead_share": {
            "identifier": times["identifier"] / times["unet"],
            "hypernetworks": times["hypernetworks"] / times["unet"],
        },
        "parameters": {**parameters, "overhead_ratio": parameters["smd"] / parameters["unet"]},
    }


def memory_child(which: str, quick: bool) -> None:
    """Run in a fresh process: one forward of `which`; print the peak-RSS growth in bytes."""
    unet, smd, sample, timestep = build(quick)
    model = unet if which == "unet" else smd
    if which == "unet":
        del smd
    with open("/proc/self/statm") as f:
        rss_before = int(f.read().split()[1]) * resource.getpagesize()
    with torch.no_grad():
        model(sample, timestep)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    print(json.dumps({"peak_growth_bytes": peak - rss_before}))


def summarize_memory(growth: dict, repeats: int) -> dict:
    """Medians of the per-process peak-RSS growths (bytes, lists ``unet`` and ``smd``) in MiB, and their ratio."""
    medians = {k: statistics.median(v) for k, v in growth.items()}
    return {
        "method": "peak RSS growth (ru_maxrss minus RSS before) during one no-grad forward, fresh process per model",
        "unet_peak_growth_mib": medians["unet"] / 2**20,
        "smd_peak_growth_mib": medians["smd"] / 2**20,
        "ratio": medians["smd"] / medians["unet"],
        "repeats": repeats,
        "raw_bytes": growth,
    }


def measure_memory(quick: bool, repeats: int, threads: int) -> dict:
    growth = {"unet": [], "smd": []}
    for _ in range(repeats):
        for which in growth:
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", which, "--threads", str(threads)]
                + (["--quick"] if quick else []),
                capture_output=True,
                text=True,
                check=True,
            )
            growth[which].append(json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_bytes"])
    return summarize_memory(growth, repeats)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny configuration, a few repeats (smoke run)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed forwards per model (default 10; quick 3)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--output", type=pathlib.Path, default=None, help="JSON path (default benchmarks/results/)"
    )
    parser.add_argument("--memory-child", choices=["unet", "smd"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.quick)
        return {}

    repeats = args.repeats or (3 if args.quick else 10)
    unet, smd, sample, timestep = build(args.quick)
    times = time_forwards(unet, smd, sample, timestep, repeats=repeats, warmup=1 if args.quick else 3)
    if args.quick:  # fresh processes cost seconds each; the smoke run skips the memory figure
        memory = {"method": "not measured in --quick", "ratio": None}
    else:
        memory = measure_memory(args.quick, repeats=3, threads=args.threads)
    unet_params, smd_params = count(unet), count(smd)
    summary = summarize_times(
        times,
        {
            "unet": unet_params,
            "smd": smd_params,
            "identifier": count(smd.identifier),
            "hypernetworks": count(smd.hypernet_in) + count(smd.hypernet_out),
        },
    )
    result = {
        "benchmark": "SMDUNet2DModel forward vs the wrapped UNet2DModel (no grad, eval, CPU)",
        "quick": args.quick,
        "setting": {
            **setting(args.quick),
            "identifier_block_out_channels": smd.config.identifier_block_out_channels,
            "identifier_layers_per_block": smd.config.identifier_layers_per_block,
        },
        "threads": args.threads,
        "repeats": repeats,
        "median_seconds": summary["median_seconds"],
        "time_ratio": summary["time_ratio"],
        "time_ratio_target": summary["time_ratio_target"],
        "overhead_share": summary["overhead_share"],
        "peak_memory": memory,
        "parameters": summary["parameters"],
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor(),
        },
    }
    output = args.output or RESULTS / ("smd_forward_quick.json" if args.quick else "smd_forward.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"forward: unet {times['unet'] * 1e3:.1f} ms, smd {times['smd'] * 1e3:.1f} ms, ratio {result['time_ratio']:.3f}"
        f" (target <= 1.10); identifier {result['overhead_share']['identifier']:.3f}, "
        f"hypernetworks {result['overhead_share']['hypernetworks']:.3f} of the unet's time\n"
        + (
            f"peak memory growth: unet {memory['unet_peak_growth_mib']:.1f} MiB, smd "
            f"{memory['smd_peak_growth_mib']:.1f} MiB, ratio {memory['ratio']:.3f}\n"
            if memory["ratio"] is not None
            else "peak memory: not measured in --quick\n"
        )
        + f"parameters: unet {unet_params:,}, smd {smd_params:,}, ratio {result['parameters']['overhead_ratio']:.4f}\n"
        f"wrote {output}"
    )
    return result


if __name__ == "__main__":
    main()
