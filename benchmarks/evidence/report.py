"""The image studies' results JSON, its tables (markdown) and figures (PNG).

Everything the docs quote is derived from the results JSON by :func:`markdown_tables`, so the docs numbers
and the committed JSON cannot disagree (tests regenerate the tables and compare). Comparisons are paired
over seeds (:mod:`.stats`): the same seed gives every model the same data order, initialisation and
sampling noise.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import numpy as np

from diffusers_smd.lipschitz import LipschitzResult, plot_lipschitz

from .config import SAMPLER_LABELS, comparison_pairs, model_timesteps, sampler_cells
from .stats import paired_comparison
from .store import Unit

__all__ = [
    "MIXTURE_REFERENCE",
    "aggregate",
    "compare",
    "markdown_tables",
    "plot_sample_grids",
    "summarise_cells",
    "write_outputs",
]

#: The mixture claim: the component means spread by at least this fraction of the Gaussian's own sigma_t.
MIXTURE_REFERENCE = 0.1


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(config: dict, work_dir: Path, wall_clock_seconds: float | None = None) -> dict:
    """Collect every finished unit of ``config`` into the results dict (raises if one is missing)."""
    from .store import plan_units
    from .worker import real_data_floor

    units = plan_units(config)
    missing = [u.name for u in units if not u.result_path(work_dir).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} units have no result yet (first: {missing[0]}); run the study first"
        )
    collected: dict[str, list] = {
        "train": [],
        "sample": [],
        "lipschitz": [],
        "lipschitz-checkpoint": [],
        "mixture": [],
    }
    for unit in units:
        data = json.loads(unit.result_path(work_dir).read_text())
        if unit.kind == "train":  # the engine's run summary of the model's folder
            data = {
                "model": unit.model,
                "seed": unit.seed,
                **{k: v for k, v in data.items() if k != "config"},
            }
        collected[unit.kind].append(data)
    metric_key = "fdd" if config["metric"] == "digits" else "fid"
    results = {
        "study": "images",
        "title": config.get("title", "evidence"),
        "config": config,
        "metric_key": metric_key,
        "wall_clock_seconds": wall_clock_seconds,
        "unit_seconds": {
            "training": sum(t["wall_clock_seconds"] for t in collected["train"]),
            "sampling": sum(c["sampling_seconds"] for c in collected["sample"]),
            "lipschitz": sum(
                i["seconds"] for i in collected["lipschitz"] + collected["lipschitz-checkpoint"]
            ),
            "mixture": sum(i["seconds"] for i in collected["mixture"]),
        },
        "training": collected["train"],
        "cells": collected["sample"],
        "lipschitz": collected["lipschitz"],
        "lipschitz_checkpoints": collected["lipschitz-checkpoint"],
        "mixture": collected["mixture"],
        "real_data_floor": real_data_floor(config) if config["metric"] == "digits" else None,
    }
    results["summary"] = summarise_cells(results)
    results["comparisons"] = compare(results)
    return results


def summarise_cells(results: dict) -> list[dict]:
    """Mean and standard deviation over seeds per (model, sampler, steps) of the metric and the class TV."""
    config, key = results["config"], results["metric_key"]
    rows = []
    for sampler, steps, _, cell_models in sampler_cells(config):
        for model in cell_models:
            cell = [
                c
                for c in results["cells"]
                if (c["model"], c["sampler"], c["steps"]) == (model, sampler, steps)
            ]
            mean, std = _mean_std([c[key] for c in cell])
            row = {"model": model, "sampler": sampler, "steps": steps, "num_seeds": len(cell), "mean": mean,
                   "std": std, "num_samples": cell[0]["num_samples"]}  # fmt: skip
            if "class_tv_distance" in cell[0]:
                row["class_tv_mean"], row["class_tv_std"] = _mean_std([c["class_tv_distance"] for c in cell])
                row["class_histogram_mean"] = np.mean([c["class_histogram"] for c in cell], axis=0).tolist()
            rows.append(row)
    return rows


def _by_seed(items: list[dict], model: str, value) -> dict[int, float]:
    return {item["seed"]: value(item) for item in items if item["model"] == model}


def _paired(model_values: dict[int, float], baseline_values: dict[int, float], direction: str, reference=0.0):
    seeds = sorted(set(model_values) & set(baseline_values))
    if len(seeds) < 2:
        return None
    return paired_comparison([model_values[s] for s in seeds], [baseline_values[s] for s in seeds], direction,
                             reference)  # fmt: skip


def compare(results: dict) -> dict:
    """Every paired comparison of the study: quality per cell, K(t) near 0, and the mixture spread."""
    config, key = results["config"], results["metric_key"]
    threshold = config["etsdm"]["threshold"]
    quality, lipschitz, mixture = [], [], []
    for model, baseline in comparison_pairs(config):
        for sampler, steps, _, cell_models in sampler_cells(config):
            if model not in cell_models or baseline not in cell_models:
                continue
            cells = [c for c in results["cells"] if (c["sampler"], c["steps"]) == (sampler, steps)]
            for metric, field in ((key, key), ("class_tv", "class_tv_distance")):
                if not cells or field not in cells[0]:
                    continue
                comparison = _paired(_by_seed(cells, model, lambda c, f=field: c[f]),
                                     _by_seed(cells, baseline, lambda c, f=field: c[f]), "lower")  # fmt: skip
                if comparison is not None:
                    quality.append({"model": model, "baseline": baseline, "sampler": sampler, "steps": steps,
                                    "metric": metric, **comparison.to_dict()})  # fmt: skip
        for measure, value in (
            (f"mean K(t), t < {threshold}", lambda r: LipschitzResult.from_dict(_k(r)).mean(t_max=threshold)),
            (
                f"max K(t), t < {threshold}",
                lambda r: max(v for t, v in zip(r["k"]["timesteps"], r["k"]["values"]) if t < threshold),
            ),
        ):
            comparison = _paired(_by_seed(results["lipschitz"], model, value),
                                 _by_seed(results["lipschitz"], baseline, value), "lower")  # fmt: skip
            if comparison is not None:
                lipschitz.append(
                    {"model": model, "baseline": baseline, "measure": measure, **comparison.to_dict()}
                )
    for model in (config.get("mixture") or {}).get("models", []):
        ratios = _by_seed(results["mixture"], model, lambda r: r["mean_ratio"])
        comparison = _paired(ratios, {seed: 0.0 for seed in ratios}, "higher", MIXTURE_REFERENCE)
        if comparison is not None:
            mixture.append(
                {
                    "model": model,
                    "measure": "spread of mu over mixture draws / sigma_t",
                    **comparison.to_dict(),
                }
            )
    return {"quality": quality, "lipschitz": lipschitz, "mixture": mixture}


def _k(item: dict) -> dict:
    """The LipschitzResult dict of a stored K(t) unit."""
    return item["k"]


def _label(sampler: str, steps: int) -> str:
    return f"{SAMPLER_LABELS[sampler]}, {steps} steps"


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return f"{value:g}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _ci(row: dict, relative: bool = False) -> str:
    text = f"{_fmt(row['mean_difference'])} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"
    if relative and row.get("relative_ci"):
        low, high = row["relative_ci"]
        text += f" ({100 * row['relative_difference']:+.0f} % [{100 * low:+.0f}, {100 * high:+.0f}])"
    return text


def markdown_tables(results: dict) -> str:
    """The study's tables, generated from the results JSON only."""
    config, key = results["config"], results["metric_key"]
    models = list(config["models"])
    summary = {(r["model"], r["sampler"], r["steps"]): r for r in results["summary"]}
    metric_name = "Frechet digits distance (FDD)" if key == "fdd" else "FID"
    first = results["summary"][0]
    lines = [
        f"**{metric_name}** against the held-out images, {first['num_samples']} generated vs {first['num_samples']} "
        "held-out, mean ± std over seeds (lower is better):",
        "",
    ]
    groups = []  # models sampled together (same cells): one table each
    for _, _, _, cell_models in sampler_cells(config):
        if cell_models not in groups:
            groups.append(cell_models)
    for group in groups:
        lines += ["| sampler | " + " | ".join(group) + " |", "|---|" + "---|" * len(group)]
        for sampler, steps, _, cell_models in sampler_cells(config):
            if cell_models != group:
                continue
            cells = []
            for model in group:
                row = summary[(model, sampler, steps)]
                text = f"{_fmt(row['mean'])} ± {_fmt(row['std'])}"
                if row["num_seeds"] != len(config["seeds"]):
                    text += f" [{row['num_seeds']} seeds]"
                cells.append(text)
            lines.append(f"| {_label(sampler, steps)} | " + " | ".join(cells) + " |")
        lines.append("")
    floor = results.get("real_data_floor")
    if floor:
        lines += [
            f"Real-data floor at this count: {floor['num_samples']} random real train images vs the held-out ones score "
            f"{_fmt(floor['mean'])} ± {_fmt(floor['std'])} ({floor['draws']} draws).",
            "",
        ]
    quality = results["comparisons"]["quality"]
    if quality:
        lines += [
            f"**Paired differences** model − baseline over {len(config['seeds'])} seeds, with 95 % CIs (negative = the "
            "model is better); in brackets the same relative to the baseline's mean. Verdict: *reproduced* when the "
            "interval lies below 0, *contradicted* when above, *undecided* otherwise.",
            "",
            f"| model − baseline | sampler | Δ {key.upper()} [95 % CI] | verdict | Δ class TV [95 % CI] | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for row in (q for q in quality if q["metric"] == key):
            tv = next((q for q in quality if q["metric"] == "class_tv" and (q["model"], q["baseline"], q["sampler"],
                       q["steps"]) == (row["model"], row["baseline"], row["sampler"], row["steps"])), None)  # fmt: skip
            tv_text = f"{_ci(tv)} | {tv['verdict']}" if tv else "n/a | n/a"
            lines.append(
                f"| {row['model']} − {row['baseline']} | {_label(row['sampler'], row['steps'])} | {_ci(row, True)} | "
                f"{row['verdict']} | {tv_text} |"
            )
        lines.append("")
    lines += _lipschitz_tables(results)
    lines += _mixture_tables(results)
    lines += ["**Training** (same UNet family, steps, batch and seeds for every model):", ""]
    lines.append(
        "| model | T | parameters | final loss (mean over seeds) | training seconds per model (mean) |"
    )
    lines.append("|---|---|---|---|---|")
    for model in models:
        runs = [t for t in results["training"] if t["model"] == model]
        lines.append(
            f"| {model} | {model_timesteps(config, model)} | {runs[0]['parameter_counts']['total']:,} | "
            f"{statistics.fmean(t['final_loss'] for t in runs):.4f} | "
            f"{statistics.fmean(t['wall_clock_seconds'] for t in runs):.0f} |"
        )
    if results.get("wall_clock_seconds") is not None:
        lines += ["", f"Wall-clock time of the study: {results['wall_clock_seconds'] / 60:.1f} min "
                  f"({config['workers']} worker processes × {config['threads_per_worker']} thread)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _lipschitz_tables(results: dict) -> list[str]:
    config = results["config"]
    settings = config.get("lipschitz")
    if not settings or not results["lipschitz"]:
        return []
    threshold = config["etsdm"]["threshold"]
    lines = [
        f"**Lipschitz constant in t**, K(t) = E ‖eps(x_t, c(t)) − eps(x_t, c(t + dt))‖ / dt with dt = {settings['dt']}, "
        f"{settings['num_samples']} held-out images, t = 0..{settings['t_max']} "
        "(`diffusers_smd.lipschitz`), mean over seeds:",
        "",
        f"| model | mean K, t < {threshold} | mean K, t ≥ {threshold} | ratio | max K, t < {threshold} | K(0) | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in settings["models"]:
        runs = [LipschitzResult.from_dict(_k(r)) for r in results["lipschitz"] if r["model"] == model]
        early = statistics.fmean(r.mean(t_max=threshold) for r in runs)
        late = statistics.fmean(r.mean(t_min=threshold) for r in runs)
        peak = statistics.fmean(max(v for t, v in zip(r.timesteps, r.values) if t < threshold) for r in runs)
        lines.append(f"| {model} | {early:.3g} | {late:.3g} | {early / late:.2f} | {peak:.3g} | "
                     f"{statistics.fmean(r.values[0] for r in runs):.3g} | {len(runs)} |")  # fmt: skip
    rows = results["comparisons"]["lipschitz"]
    if rows:
        lines += ["", "| model − baseline | measure | difference [95 % CI] | verdict |", "|---|---|---|---|"]
        for row in rows:
            lines.append(
                f"| {row['model']} − {row['baseline']} | {row['measure']} | {_ci(row, True)} | {row['verdict']} |"
            )
    checkpoints = results.get("lipschitz_checkpoints") or []
    if checkpoints:
        lines += [
            "",
            "**K(t) during training** (the EMA weights of each training checkpoint, same x_0 and noise), mean over seeds:",
            "",
            f"| model | step | mean K, t < {threshold} | mean K, t ≥ {threshold} | ratio | max K, t < {threshold} |",
            "|---|---|---|---|---|---|",
        ]
        final_step = config["training"]["max_train_steps"]
        for model in settings["models"]:
            steps = sorted({c["step"] for c in checkpoints if c["model"] == model})
            for step in [*steps, final_step]:
                items = checkpoints if step != final_step else results["lipschitz"]
                runs = [
                    LipschitzResult.from_dict(_k(c))
                    for c in items
                    if c["model"] == model and (c.get("step") == step or step == final_step)
                ]
                if not runs:
                    continue
                early = statistics.fmean(r.mean(t_max=threshold) for r in runs)
                late = statistics.fmean(r.mean(t_min=threshold) for r in runs)
                peak = statistics.fmean(
                    max(v for t, v in zip(r.timesteps, r.values) if t < threshold) for r in runs
                )
                lines.append(f"| {model} | {step}{' (final)' if step == final_step else ''} | {early:.3g} | {late:.3g} | "
                             f"{early / late:.2f} | {peak:.3g} |")  # fmt: skip
    return [*lines, ""]


def _mixture_tables(results: dict) -> list[str]:
    config = results["config"]
    if not results["mixture"]:
        return []
    lines = [
        "**Is it a mixture?** At a fixed x_t (noisy held-out digits), the per-coordinate standard deviation of the "
        "ancestral step's mean over mixture draws, divided by the step's own sigma_t; mean over the steps of the "
        f"model's DDPM grid (sigma_t > 0). Claim reproduced when the 95 % CI lies above {MIXTURE_REFERENCE}.",
        "",
        "| model | T | grid steps | spread / sigma_t, mean [95 % CI] | verdict | per step t: spread / sigma_t (seed mean) |",
        "|---|---|---|---|---|---|",
    ]
    rows = {row["model"]: row for row in results["comparisons"]["mixture"]}
    for model in config["mixture"]["models"]:
        runs = [r for r in results["mixture"] if r["model"] == model]
        per_step = []
        for index, step in enumerate(runs[0]["steps"]):
            if step["ratio"] is not None:
                per_step.append(
                    f"{step['t']}: {statistics.fmean(r['steps'][index]['ratio'] for r in runs):.3g}"
                )
        row = rows[model]
        lines.append(
            f"| {model} | {runs[0]['num_train_timesteps']} | {runs[0]['num_inference_steps']} | "
            f"{_fmt(row['model_mean'])} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}] | {row['verdict']} | "
            f"{', '.join(per_step)} |"
        )
    return [*lines, ""]


def plot_lipschitz_figures(results: dict, output_dir: Path) -> list[str]:
    """lipschitz.png (final models, seeds as bands) and lipschitz_training.png (during training); names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = results["config"]
    written = []
    curves = {model: [LipschitzResult.from_dict(_k(r)) for r in results["lipschitz"] if r["model"] == model]
              for model in config["lipschitz"]["models"]}  # fmt: skip
    plot_lipschitz({m: c for m, c in curves.items() if c}, output_dir / "lipschitz.png")
    written.append("lipschitz.png")
    checkpoints = results.get("lipschitz_checkpoints") or []
    if checkpoints:
        models = config["lipschitz"]["models"]
        figure, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 3.8), dpi=110, squeeze=False)
        final_step = config["training"]["max_train_steps"]
        for axis, model in zip(axes[0], models):
            steps = sorted({c["step"] for c in checkpoints if c["model"] == model})
            per_step = {f"step {s}": [LipschitzResult.from_dict(_k(c)) for c in checkpoints
                                      if c["model"] == model and c["step"] == s] for s in steps}  # fmt: skip
            per_step[f"step {final_step} (final)"] = curves[model]
            plot_lipschitz(per_step, axis=axis, title=f"{model}: K(t) during training")
        figure.tight_layout()
        figure.savefig(output_dir / "lipschitz_training.png")
        plt.close(figure)
        written.append("lipschitz_training.png")
    return written


def model_family(model: str) -> str:
    """A model's name without its ``-T<steps>`` suffix: the models of a family differ only in T."""
    return re.sub(r"-T\d+$", "", model)


def plot_quality(results: dict, path: Path) -> bool:
    """The metric against sampling steps, one panel per sampler with several step counts, one line per model
    family (mean over seeds, band: 95 % CI of the mean). Returns False when no sampler has several step counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .stats import student_t_975

    config, key = results["config"], results["metric_key"]
    samplers = {}
    for sampler, steps, _, models in sampler_cells(config):
        for model in models:
            samplers.setdefault(sampler, {}).setdefault(model_family(model), []).append((steps, model))
    samplers = {s: f for s, f in samplers.items() if len({n for points in f.values() for n, _ in points}) > 1}
    if not samplers:
        return False
    figure, axes = plt.subplots(1, len(samplers), figsize=(3.6 * len(samplers), 3.3), dpi=110, squeeze=False)
    for axis, (sampler, families) in zip(axes[0], samplers.items()):
        for family, points in families.items():
            points = sorted(points)
            values = np.array([[c[key] for c in sorted((c for c in results["cells"] if (c["model"], c["sampler"],
                      c["steps"]) == (model, sampler, steps)), key=lambda c: c["seed"])] for steps, model in points])  # fmt: skip
            mean = values.mean(axis=1)
            half = (
                student_t_975(values.shape[1] - 1) * values.std(axis=1, ddof=1) / math.sqrt(values.shape[1])
            )
            steps = [n for n, _ in points]
            (line,) = axis.plot(steps, mean, "o-", markersize=3, label=family)
            axis.fill_between(steps, mean - half, mean + half, color=line.get_color(), alpha=0.2, linewidth=0)
        ticks = sorted({n for points in families.values() for n, _ in points})
        axis.set_xscale("log")
        axis.set_xticks(ticks)
        axis.set_xticklabels([str(n) for n in ticks])
        axis.minorticks_off()
        axis.set_title(SAMPLER_LABELS[sampler], fontsize=9)
        axis.set_xlabel("sampling steps")
        axis.set_ylabel(key.upper())
        axis.legend(fontsize=7)
    figure.suptitle(f"{key.upper()} vs steps (band: 95 % CI of the mean over seeds)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def plot_sample_grids(config: dict, work_dir: Path, path: Path) -> bool:
    """Sample grids: one row per ``grids.cells`` entry, one panel per model sampled in that cell (same x_T per row).

    Returns False (and writes nothing) when the work folder no longer holds the samples.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffusers_smd.sampling import image_grid

    grids = config["grids"]
    rows = []
    for cell in grids["cells"]:
        models = [m for s, n, _, cell_models in sampler_cells(config) if (s, n) == (cell["sampler"], cell["steps"])
                  for m in cell_models]  # fmt: skip
        files = [Unit("sample", m, grids["seed"], cell["sampler"], cell["steps"]).result_path(work_dir).with_suffix(".npy")
                 for m in models]  # fmt: skip
        rows.append((cell, [(m, f) for m, f in zip(models, files) if f.is_file()]))
    if not any(panels for _, panels in rows):
        return False
    columns = max(len(panels) for _, panels in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.2 * columns, 2.5 * len(rows)), dpi=120,
                                squeeze=False)  # fmt: skip
    for i, (cell, panels) in enumerate(rows):
        for j in range(columns):
            axis = axes[i][j]
            axis.set_xticks([])
            axis.set_yticks([])
            if j >= len(panels):
                axis.set_axis_off()
                continue
            model, samples = panels[j]
            axis.set_title(model, fontsize=8)
            if j == 0:
                axis.set_ylabel(_label(cell["sampler"], cell["steps"]), fontsize=7)
            grid = image_grid(np.load(samples, allow_pickle=False), gap=1)
            axis.imshow(np.asarray(grid), cmap="gray" if grid.mode == "L" else None, interpolation="nearest",
                        vmin=0, vmax=255)  # fmt: skip
    figure.suptitle(f"seed {grids['seed']}: the same initial noise in every row", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def plot_mixture(results: dict, path: Path) -> None:
    """spread / sigma_t against t for each mixture model (mean over seeds, min-max band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["config"]["mixture"]["models"]
    figure, axis = plt.subplots(figsize=(6.0, 3.8), dpi=110)
    for model in models:
        runs = [r for r in results["mixture"] if r["model"] == model]
        keep = [i for i, s in enumerate(runs[0]["steps"]) if s["ratio"] is not None]
        fraction = [runs[0]["steps"][i]["t"] / runs[0]["num_train_timesteps"] for i in keep]
        values = np.array([[r["steps"][i]["ratio"] for i in keep] for r in runs])
        (line,) = axis.plot(fraction, values.mean(axis=0), "o-", markersize=3, label=model)
        axis.fill_between(fraction, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)
    axis.axhline(
        MIXTURE_REFERENCE, color="k", linestyle=":", linewidth=1, label=f"claim threshold {MIXTURE_REFERENCE}"
    )
    axis.set_yscale("log")
    axis.set_xlabel("t / T (step of the model's DDPM grid)")
    axis.set_ylabel("spread of mu over mixture draws / sigma_t")
    axis.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_outputs(results: dict, output_dir: Path, work_dir: Path | None = None) -> str:
    """Figures into ``output_dir``; returns the markdown tables."""
    config = results["config"]
    if results["lipschitz"]:
        plot_lipschitz_figures(results, output_dir)
    plot_quality(results, output_dir / "quality.png")
    if results["mixture"]:
        plot_mixture(results, output_dir / "mixture.png")
    if config.get("grids") and work_dir is not None:
        plot_sample_grids(config, work_dir, output_dir / "sample_grids.png")
    return markdown_tables(results)
