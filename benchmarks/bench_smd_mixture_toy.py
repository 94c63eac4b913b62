"""Which objective works: vanilla / smd / smd-mixture on a 2-D 7x7 grid of Gaussians, 2 to 100 backward steps.

For every number of backward steps n in (2, 4, 10, 100) each objective trains its model on an n-step
schedule (num_train_timesteps = n, cosine betas, v-prediction, as the reference's few-step experiments
train with a small T) and samples with ancestral DDPM on the same n steps. vanilla trains the plain MLP
(``SMDVectorModel(use_mixture=False)``, widened to match the SMD model's parameter count); smd and
smd-mixture train the same SMD model. Metrics against exact samples of the mixture: sliced Wasserstein-2,
the fraction of samples within 3 sigma of a mode, and the number of modes hit; mean and spread over seeds.

    python benchmarks/bench_smd_mixture_toy.py            # full run (JSON + PNG under benchmarks/results/)
    python benchmarks/bench_smd_mixture_toy.py --quick    # seconds-long smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import pathlib
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import torch
from diffusers import DDPMScheduler

from diffusers_smd import SMDVectorModel, SMDVectorPipeline
from diffusers_smd.sampling import sample_batches
from diffusers_smd.training import InMemoryTask, TrainingConfig, train

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
# benchmark label -> (objective name, training settings); the last one is an ablation, run with --objectives
OBJECTIVE_VARIANTS = {
    "vanilla": ("vanilla", {}),
    "smd": ("smd", {}),
    "smd-mixture": ("smd-mixture", {}),
    "smd-mixture-no-xi": ("smd-mixture", {"smd_mixture_mean_posterior": True}),
}
OBJECTIVES = ("vanilla", "smd", "smd-mixture")
GRID_SIZE, GRID_SPACING, MODE_STD = 7, 0.5, 0.05


# -- data and metrics ------------------------------------------------------------------------------------
def grid_modes() -> torch.Tensor:
    coordinates = (torch.arange(GRID_SIZE, dtype=torch.float32) - (GRID_SIZE - 1) / 2) * GRID_SPACING
    return torch.cartesian_prod(coordinates, coordinates)


def exact_samples(num: int, generator: torch.Generator) -> torch.Tensor:
    modes = grid_modes()
    index = torch.randint(0, len(modes), (num,), generator=generator)
    return modes[index] + MODE_STD * torch.randn(num, 2, generator=generator)


def sliced_wasserstein2(a: torch.Tensor, b: torch.Tensor, num_projections: int = 256, seed: int = 0) -> float:
    """sqrt(mean over random unit directions of W2^2 between the 1-D projections), equal sample counts."""
    directions = torch.randn(2, num_projections, generator=torch.Generator().manual_seed(seed))
    directions = directions / directions.norm(dim=0, keepdim=True)
    projected_a = (a @ directions).sort(dim=0).values
    projected_b = (b @ directions).sort(dim=0).values
    return math.sqrt(((projected_a - projected_b) ** 2).mean().item())


def mode_statistics(samples: torch.Tensor) -> tuple[float, int]:
    """(fraction of samples within 3 sigma of their nearest mode, modes with >= 5 such samples)."""
    distances = torch.cdist(samples, grid_modes())
    nearest_distance, nearest_mode = distances.min(dim=1)
    close = nearest_distance < 3 * MODE_STD
    counts = torch.bincount(nearest_mode[close], minlength=GRID_SIZE**2)
    return close.float().mean().item(), int((counts >= 5).sum())


# -- models, training, sampling ----------------------------------------------------------------------------
def make_scheduler(num_steps: int) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=num_steps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        clip_sample=False,
    )


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_configs(hidden_dim: int) -> dict[str, dict]:
    """SMD config, and the vanilla config whose hidden_dim gives the closest parameter count."""
    smd = dict(data_dim=2, hidden_dim=hidden_dim, num_layers=2, latent_dim=8, identifier_hidden_dim=32)
    target = count_parameters(SMDVectorModel(**smd))
    widths = range(hidden_dim, 2 * hidden_dim)
    best = min(
        widths,
        key=lambda w: abs(
            count_parameters(SMDVectorModel(**{**smd, "hidden_dim": w, "use_mixture": False})) - target
        ),
    )
    vanilla = {**smd, "hidden_dim": best, "use_mixture": False}
    return {"vanilla": vanilla, "smd": smd, "smd-mixture": smd, "smd-mixture-no-xi": smd}


def train_and_sample(job: dict) -> dict:
    """Train with the package's training engine (in-memory task), sample with SMDVectorPipeline."""
    import tempfile

    torch.set_num_threads(1)
    torch.manual_seed(job["seed"])
    generator = torch.Generator().manual_seed(job["seed"])
    scheduler = make_scheduler(job["num_steps"])
    model = SMDVectorModel(**job["config"])
    name, options = OBJECTIVE_VARIANTS[job["objective"]]
    data = exact_samples(job["train_steps"] * job["batch_size"], generator)  # fresh samples for every step
    with tempfile.TemporaryDirectory(prefix="toy-") as output_dir:
        config = TrainingConfig(
            objective=name,
            **options,
            train_batch_size=job["batch_size"],
            max_train_steps=job["train_steps"],
            learning_rate=job["lr"],
            lr_scheduler="cosine",
            lr_warmup_steps=job["train_steps"] // 20,
            adam_beta1=0.9,
            adam_beta2=0.99,
            adam_weight_decay=0.0,
            checkpointing_steps=10**9,
            output_dir=output_dir,
            seed=job["seed"],
        )
        start = time.perf_counter()
        task = InMemoryTask(
            config,
            model,
            scheduler,
            data,
            dataset_name="7x7 grid of Gaussians",
            pipeline_class=SMDVectorPipeline,
        )
        summary = train(config, task)
        train_seconds = time.perf_counter() - start
        pipeline = SMDVectorPipeline.from_pretrained(output_dir)
    pipeline.set_progress_bar_config(disable=True)
    samples = torch.from_numpy(
        sample_batches(
            pipeline, job["num_samples"], job["num_steps"], seed=job["seed"], batch_size=job["num_samples"]
        )
    )
    reference = exact_samples(job["num_samples"], torch.Generator().manual_seed(10_000 + job["seed"]))
    within, modes = mode_statistics(samples)
    return {
        **{key: job[key] for key in ("objective", "num_steps", "seed")},
        "sliced_w2": sliced_wasserstein2(samples, reference),
        "within_3_sigma": within,
        "modes_hit": modes,
        "final_loss": summary.final_loss,
        "train_seconds": train_seconds,
        "samples": samples.tolist() if job["seed"] == job["plot_seed"] else None,
    }


# -- reporting ----------------------------------------------------------------------------------------------
def summarise(runs: list[dict], step_counts, objectives) -> list[dict]:
    rows = []
    for num_steps in step_counts:
        for name in objectives:
            chosen = [r for r in runs if r["objective"] == name and r["num_steps"] == num_steps]
            row = {"objective": name, "num_steps": num_steps, "seeds": len(chosen)}
            for metric in ("sliced_w2", "within_3_sigma", "modes_hit"):
                values = [r[metric] for r in chosen]
                row[metric + "_mean"] = statistics.fmean(values)
                row[metric + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            rows.append(row)
    return rows


def plot(runs: list[dict], step_counts, objectives, reference: list, stem: pathlib.Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def panel(axis, points, title):
        points = torch.tensor(points)
        axis.scatter(points[:, 0], points[:, 1], s=1, alpha=0.4)
        axis.set_xlim(-2.2, 2.2)
        axis.set_ylim(-2.2, 2.2)
        axis.set_aspect("equal")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_title(title, fontsize=8)

    def samples_of(name, num_steps):
        return next(
            r["samples"]
            for r in runs
            if r["objective"] == name and r["num_steps"] == num_steps and r["samples"]
        )

    written = []
    figure, axes = plt.subplots(
        len(objectives), len(step_counts) + 1, figsize=(2.2 * (len(step_counts) + 1), 2.2 * len(objectives))
    )
    axes = axes.reshape(len(objectives), len(step_counts) + 1)
    for row, name in enumerate(objectives):
        panel(axes[row, 0], reference, "exact samples")
        for column, num_steps in enumerate(step_counts, start=1):
            panel(axes[row, column], samples_of(name, num_steps), f"{name}, {num_steps} steps")
    figure.tight_layout()
    path = stem.with_name(f"{stem.name}.png")
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written.append(path.name)
    for name in objectives:
        figure, axes = plt.subplots(1, len(step_counts), figsize=(2.4 * len(step_counts), 2.6))
        for axis, num_steps in zip(list(axes) if len(step_counts) > 1 else [axes], step_counts):
            panel(axis, samples_of(name, num_steps), f"{name}, {num_steps} steps")
        figure.tight_layout()
        path = stem.with_name(f"{stem.name}_{name}.png")
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path.name)
    return written


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="seconds-long smoke run (1 seed, 2 settings, tiny training)"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden-dim", type=int, default=48)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument(
        "--step-counts", type=int, nargs="+", default=[2, 4, 10, 100], help="backward steps to test"
    )
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVE_VARIANTS))
    parser.add_argument("--output-dir", type=pathlib.Path, default=RESULTS)
    parser.add_argument("--workers", type=int, default=3, help="parallel training processes")
    parser.add_argument("--output-stem", default=None, help="file name stem under benchmarks/results/")
    args = parser.parse_args(argv)
    for name in ("seeds", "train_steps", "batch_size", "hidden_dim", "num_samples", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.step_counts) < 1:
        parser.error("--step-counts must all be >= 1")

    step_counts = tuple(args.step_counts)
    if args.quick:
        step_counts, args.seeds, args.train_steps, args.num_samples = (2, 10), 1, 10, 300
    stem = args.output_stem or ("smd_mixture_toy_quick" if args.quick else "smd_mixture_toy")
    configs = model_configs(args.hidden_dim)
    parameter_counts = {name: count_parameters(SMDVectorModel(**configs[name])) for name in args.objectives}
    jobs = [
        dict(objective=name, num_steps=n, seed=seed, config=configs[name], train_steps=args.train_steps,
             batch_size=args.batch_size, lr=args.lr, num_samples=args.num_samples, plot_seed=0)
        for seed in range(args.seeds) for n in step_counts for name in args.objectives
    ]  # fmt: skip
    jobs.sort(
        key=lambda job: not job["objective"].startswith("smd-mixture")
    )  # slowest first for better packing
    start = time.perf_counter()
    if args.workers == 1:
        runs = [train_and_sample(job) for job in jobs]
    else:
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("fork")) as pool:
            runs = []
            for run in pool.map(train_and_sample, jobs):
                runs.append(run)
                print(f"[{len(runs)}/{len(jobs)}] {run['objective']} n={run['num_steps']} seed={run['seed']} "
                      f"SW2 {run['sliced_w2']:.3f} train {run['train_seconds']:.0f} s", flush=True)  # fmt: skip
    wall_seconds = time.perf_counter() - start

    reference = exact_samples(args.num_samples, torch.Generator().manual_seed(123))
    floor = sliced_wasserstein2(exact_samples(args.num_samples, torch.Generator().manual_seed(7)), reference)
    objectives = tuple(args.objectives)
    rows = summarise(runs, step_counts, objectives)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    figures = plot(runs, step_counts, objectives, reference.tolist(), args.output_dir / stem)
    result = {
        "benchmark": "smd_mixture_toy",
        "setup": {
            "data": f"{GRID_SIZE}x{GRID_SIZE} grid of 2-D Gaussians, spacing {GRID_SPACING}, std {MODE_STD}, equal weights",
            "training": "the package's training engine (InMemoryTask): num_train_timesteps = number of sampling "
            "steps, squaredcos_cap_v2 betas, v_prediction, AdamW (0.9, 0.99, no weight decay) with cosine LR and "
            "warm-up, grad clip 1.0, fresh exact samples for every step",
            "sampling": "SMDVectorPipeline with the ancestral DDPMScheduler on the same n steps, fresh eta every step",
            "smd-mixture": "num_mixture_samples = 4",
            "objective_variants": {name: OBJECTIVE_VARIANTS[name] for name in objectives},
            **{k: v for k, v in vars(args).items() if k not in ("output_stem", "output_dir")},
            "step_counts": list(step_counts),
        },
        "parameter_counts": parameter_counts,
        "model_configs": configs,
        "exact_vs_exact_sliced_w2": floor,
        "exact_within_3_sigma_and_modes_hit": mode_statistics(reference),
        "summary": rows,
        "runs": [{k: v for k, v in r.items() if k != "samples"} for r in runs],
        "wall_seconds": wall_seconds,
        "cpu_count": os.cpu_count(),
        "figures": figures,
    }
    (args.output_dir / f"{stem}.json").write_text(json.dumps(result, indent=2))

    print(f"parameters: {parameter_counts}   wall {wall_seconds:.0f} s   exact-vs-exact SW2 {floor:.3f}")
    print(
        f"{'steps':>5} {'objective':>12} {'SW2 (lower better)':>20} {'within 3 sigma':>16} {'modes hit':>10}"
    )
    for row in rows:
        print(
            f"{row['num_steps']:>5} {row['objective']:>12} {row['sliced_w2_mean']:>11.3f} +- {row['sliced_w2_std']:.3f}"
            f" {row['within_3_sigma_mean']:>8.3f} +- {row['within_3_sigma_std']:.3f} {row['modes_hit_mean']:>6.1f}"
        )
    for num_steps in step_counts if {"vanilla", "smd", "smd-mixture"} <= set(objectives) else ():
        by_name = {row["objective"]: row for row in rows if row["num_steps"] == num_steps}
        ratio = by_name["smd-mixture"]["sliced_w2_mean"] / by_name["vanilla"]["sliced_w2_mean"]
        print(f"{num_steps:>5} steps: SW2 smd-mixture / vanilla = {ratio:.2f}, smd / vanilla = "
              f"{by_name['smd']['sliced_w2_mean'] / by_name['vanilla']['sliced_w2_mean']:.2f}")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
