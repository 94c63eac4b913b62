"""Dilation-path sampler vs ULA, MALA and annealed geometric Langevin at an EQUAL gradient budget.

    python benchmarks/bench_dilation_path.py            # full run (3 seeds, ~10 min on 2 busy cores)
    python benchmarks/bench_dilation_path.py --quick    # seconds-long smoke run

Targets: 2-D 40 modes (means uniform in [-40, 40]^2, unit covariance, equal weights); 2-D 7x7 grid
(spacing 10, unit covariance, weights uniform in [1, 10] then normalised); 10-D and 50-D mixtures with
2-8 modes (means N(0, 5^2 I) resp. N(0, 3^2 I), unit covariance, weights uniform in [1, 10]); Neal's
funnel (10-D). Every method gets the same number of target evaluations per sample (``--budget``); the
extension's log-density-only evaluations are counted as full evaluations. Metrics: total variation
between the fraction of samples in each mode and the true weights, sliced Wasserstein-2 to exact
samples, wall-clock per 1000 samples. Writes ``benchmarks/results/dilation_path_<target>.json`` and
``.png`` per target and ``dilation_path_summary.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import time

import torch

from diffusers_smd.dilation import (
    DilationPathPipeline,
    DilationPathScheduler,
    GaussianMixture,
    NealsFunnel,
    annealed_geometric_langevin,
    mala,
    mode_weight_tv,
    sliced_wasserstein2,
    ula,
)

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
STEPS_PER_LEVEL = 10
IMPORTANCE_PER_SAMPLE = 10  # log-density evaluations per sample spent by the extension
METROPOLIS_STEPS = 20  # target evaluations per sample of the extension's Metropolis-adjusted final phase


def make_target(name: str, seed: int):
    gen = torch.Generator().manual_seed(1000 + seed)
    if name == "mog40_2d":
        return GaussianMixture(torch.rand(40, 2, generator=gen, dtype=torch.float64) * 80 - 40)
    if name == "grid7x7_2d":
        axis = torch.arange(-30.0, 31.0, 10.0, dtype=torch.float64)
        means = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
        return GaussianMixture(means, 1 + 9 * torch.rand(49, generator=gen, dtype=torch.float64))
    if name in ("mog10d", "mog50d"):
        dim, spread = (10, 5.0) if name == "mog10d" else (50, 3.0)
        k = int(torch.randint(2, 9, (1,), generator=gen))
        means = spread * torch.randn(k, dim, generator=gen, dtype=torch.float64)
        return GaussianMixture(means, 1 + 9 * torch.rand(k, generator=gen, dtype=torch.float64))
    if name == "funnel10d":
        return NealsFunnel(dim=10)
    raise ValueError(f"unknown target {name!r}")


def dilation(target, n, budget, gen, reweight: bool, hot: bool = True):
    """Plain path: budget // 10 levels of 10 steps. Extension: fewer levels so that the path, the MALA final
    phase (METROPOLIS_STEPS per sample) and the proposals (IMPORTANCE_PER_SAMPLE per sample) fit the budget."""
    spare = METROPOLIS_STEPS + IMPORTANCE_PER_SAMPLE if reweight else 0
    levels = max(1, (budget - spare) // STEPS_PER_LEVEL)
    config = {} if hot else {"initial_step_size": None}
    pipe = DilationPathPipeline(DilationPathScheduler(langevin_steps_per_level=STEPS_PER_LEVEL, **config))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        target,
        n,
        levels,
        gen,
        dtype=torch.float64,
        reweight_modes=reweight,
        metropolis_steps=METROPOLIS_STEPS if reweight else 0,
        num_importance_samples=IMPORTANCE_PER_SAMPLE * n,
    )
    extra = {}
    if reweight and hasattr(target, "assign_modes"):
        # the extension's own mass estimate, mapped to the true modes through the centres it found
        owner = target.assign_modes(out.mode_centers.double())
        estimate = torch.zeros(target.num_modes, dtype=torch.float64).index_add_(0, owner, out.mode_weights)
        extra = {
            "mass_estimate_tv": mode_weight_tv(estimate, target.weights),
            "effective_sample_size": out.effective_sample_size,
        }
    return out.samples, out.num_gradient_evaluations + out.num_log_density_evaluations, extra


def baseline(fn, **kwargs):
    def run(target, n, budget, gen):
        out = fn(target, n, budget, gen, dtype=torch.float64, **kwargs)
        return out.samples, out.num_gradient_evaluations + out.num_log_density_evaluations, {}

    return run


METHODS = {
    "ULA": baseline(ula),
    "MALA": baseline(mala),
    "annealed geometric": baseline(annealed_geometric_langevin),
    "dilation (constant step)": lambda t, n, b, g: dilation(t, n, b, g, reweight=False, hot=False),
    "dilation (plain)": lambda t, n, b, g: dilation(t, n, b, g, reweight=False),
    "dilation + reweighting": lambda t, n, b, g: dilation(t, n, b, g, reweight=True),
}
BASELINES = ("ULA", "MALA", "annealed geometric")
PLOTTED = ("ULA", "annealed geometric", "dilation (plain)", "dilation + reweighting")


def evaluate(target, samples, exact, gen) -> dict:
    finite = torch.isfinite(samples).all(1)
    row = {"non_finite_samples": int((~finite).sum())}
    samples = samples[finite]
    row["sliced_w2"] = sliced_wasserstein2(samples, exact, num_projections=256, generator=gen)
    if hasattr(target, "assign_modes"):
        weights = target.mode_weights_of(samples)
        row["mode_weight_tv"] = mode_weight_tv(weights, target.weights)
        row["modes_found"] = int((weights > 0).sum())
        row["mode_weights"] = weights.tolist()
    return row


def run_target(name: str, seeds: list[int], n: int, budget: int, methods: list[str]) -> dict:
    runs, shown = [], {}
    for seed in seeds:
        target = make_target(name, seed)
        exact = target.sample(n, torch.Generator().manual_seed(2000 + seed))
        reference = evaluate(
            target,
            target.sample(n, torch.Generator().manual_seed(3000 + seed)),
            exact,
            torch.Generator().manual_seed(seed),
        )
        entry = {"seed": seed, "exact_sampler": reference, "methods": {}}
        if seed == seeds[0]:
            shown["exact"] = exact
        if hasattr(target, "weights"):
            entry["true_weights"] = target.weights.tolist()
        for method in methods:
            t0 = time.perf_counter()
            samples, evals, extra = METHODS[method](target, n, budget, torch.Generator().manual_seed(seed))
            seconds = time.perf_counter() - t0
            row = evaluate(target, samples, exact, torch.Generator().manual_seed(seed))
            row.update(extra, evaluations_per_sample=evals / n, seconds_per_1000_samples=1000 * seconds / n)
            entry["methods"][method] = row
            if seed == seeds[0] and method in PLOTTED:
                shown[method] = samples
            tv = row.get("mode_weight_tv")
            tv_text = f"TV {tv:.3f} " if tv is not None else ""
            print(
                f"{name} seed {seed} {method:26s} {tv_text}SW2 {row['sliced_w2']:.3f} ({seconds:.1f}s)",
                flush=True,
            )
        runs.append(entry)
    result = {"target": name, "num_samples": n, "budget_per_sample": budget, "runs": runs}
    result["summary"] = summarise(runs, methods)
    return result, shown


def _mean_std(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std()) if len(values) > 1 else 0.0}


def summarise(runs, methods):
    out = {}
    for key in ("mode_weight_tv", "sliced_w2", "seconds_per_1000_samples", "mass_estimate_tv", "modes_found"):
        out[key] = {m: _mean_std([r["methods"][m].get(key) for r in runs]) for m in methods}
        out[key]["exact sampler"] = _mean_std([r["exact_sampler"].get(key) for r in runs])
    tv = out["mode_weight_tv"]
    best = [tv[m]["mean"] for m in BASELINES if m in tv and tv[m] is not None]
    if best and tv.get("dilation (plain)"):
        out["best_baseline_tv"] = min(best)
        for m in ("dilation (plain)", "dilation + reweighting"):
            if tv.get(m):
                out[f"tv_ratio_to_best_baseline[{m}]"] = tv[m]["mean"] / min(best)
    return out


def plot(result: dict, samples: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(result["summary"]["sliced_w2"].keys())
    methods = [m for m in methods if m != "exact sampler"]
    fig, axes = plt.subplots(2, max(3, len(samples)), figsize=(3.2 * max(3, len(samples)), 6.4))
    for ax, (label, x) in zip(axes[0], samples.items()):
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4)
        ax.set_title(label, fontsize=8)
    for ax in axes[0][len(samples) :]:
        ax.axis("off")
    for ax, key in zip(axes[1], ("mode_weight_tv", "sliced_w2")):
        stats = result["summary"][key]
        names = [m for m in methods + ["exact sampler"] if stats.get(m)]
        ax.bar(range(len(names)), [stats[m]["mean"] for m in names], yerr=[stats[m]["std"] for m in names])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{key} (mean ± std over seeds)", fontsize=8)
    run0 = result["runs"][0]
    ax = axes[1][2]
    if "true_weights" in run0:
        order = sorted(range(len(run0["true_weights"])), key=lambda i: -run0["true_weights"][i])
        ax.plot([run0["true_weights"][i] for i in order], "k-", label="true")
        for m in ("ULA", "dilation (plain)", "dilation + reweighting"):
            if m in run0["methods"]:
                ax.plot([run0["methods"][m]["mode_weights"][i] for i in order], ".", label=m)
        ax.set_title("mode weights, seed 0 (modes sorted by true weight)", fontsize=8)
        ax.legend(fontsize=6)
    else:
        ax.axis("off")
    for ax in axes[1][3:]:
        ax.axis("off")
    fig.suptitle(
        f"{result['target']}: {result['budget_per_sample']} target evaluations per sample", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--budget", type=int, default=500, help="target evaluations per sample, every method")
    parser.add_argument(
        "--targets", nargs="*", default=["mog40_2d", "grid7x7_2d", "mog10d", "mog50d", "funnel10d"]
    )
    parser.add_argument("--output-dir", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.num_samples, args.budget = 1, 100, 40
    if args.budget < 2 * (1 + IMPORTANCE_PER_SAMPLE):
        raise ValueError(f"--budget must be at least {2 * (1 + IMPORTANCE_PER_SAMPLE)}, got {args.budget}")
    torch.set_num_threads(1)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    prefix = "dilation_path_quick_" if args.quick else "dilation_path_"
    summary = {}
    t0 = time.perf_counter()
    for name in args.targets:
        result, shown = run_target(
            name, list(range(args.seeds)), args.num_samples, args.budget, list(METHODS)
        )
        (args.output_dir / f"{prefix}{name}.json").write_text(json.dumps(result, indent=1))
        plot(result, shown, args.output_dir / f"{prefix}{name}.png")
        summary[name] = result["summary"]
    summary["wall_clock_seconds"] = time.perf_counter() - t0
    summary["settings"] = {
        "seeds": args.seeds,
        "num_samples": args.num_samples,
        "budget_per_sample": args.budget,
    }
    (args.output_dir / f"{prefix}summary.json").write_text(json.dumps(summary, indent=1))
    print_table(summary, args.targets)
    return summary


def print_table(summary: dict, targets: list[str]) -> None:
    print(
        "\n| target | "
        + " | ".join(METHODS)
        + " | exact sampler | plain / best baseline | extension / best baseline |"
    )
    print("|---" * (len(METHODS) + 4) + "|")
    for name in targets:
        s = summary[name]
        for key in ("mode_weight_tv", "sliced_w2"):
            cells = []
            for m in list(METHODS) + ["exact sampler"]:
                v = s[key].get(m)
                cells.append(f"{v['mean']:.3f} ± {v['std']:.3f}" if v else "–")
            ratios = [
                s.get(f"tv_ratio_to_best_baseline[{m}]")
                for m in ("dilation (plain)", "dilation + reweighting")
            ]
            ratio_cells = [f"{r:.2f}" if (r is not None and key == "mode_weight_tv") else "" for r in ratios]
            print(f"| {name} {key} | " + " | ".join(cells) + " | " + " | ".join(ratio_cells) + " |")
    print(f"\ntotal wall clock {summary['wall_clock_seconds']:.0f}s")


if __name__ == "__main__":
    main()
