"""The exact-score study's results JSON, its tables (markdown, generated from the JSON only) and figures."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np

from diffusers_smd.lipschitz import LipschitzResult, plot_lipschitz

from .config import SAMPLER_LABELS
from .exact_score import groups, load_results
from .stats import paired_comparison

__all__ = ["aggregate", "compare", "markdown_tables", "write_outputs", "early_mean"]

METRIC_LABELS = {"sw2": "sliced W2", "mode_tv": "mode-weight TV"}


def early_mean(lipschitz: dict, threshold: int, early: bool = True) -> float:
    """Mean K(t) over t < threshold (``early``) or t >= threshold."""
    result = LipschitzResult.from_dict(lipschitz)
    return result.mean(t_max=threshold) if early else result.mean(t_min=threshold)


def _runs(results: dict, group: str, model: str) -> list[dict]:
    return sorted(
        (r for r in results["runs"] if r["group"] == group and r["model"] == model), key=lambda r: r["seed"]
    )


def _cell(run: dict, sampler: str, steps: int) -> dict:
    return next(c for c in run["cells"] if (c["sampler"], c["steps"]) == (sampler, steps))


def compare(results: dict) -> dict:
    """Paired comparisons E-TSDM - vanilla per group: every (sampler, steps, metric) cell and mean K over t < t~."""
    config = results["config"]
    threshold = config["etsdm"]["threshold"]
    quality, lipschitz = [], []
    for group, *_ in groups(config):
        vanilla, etsdm = _runs(results, group, "vanilla"), _runs(results, group, "etsdm")
        if [r["seed"] for r in vanilla] != [r["seed"] for r in etsdm]:
            raise ValueError(f"{group}: vanilla and etsdm must have the same seeds to be paired")
        for sampler in config["sampling"]["samplers"]:
            for steps in config["sampling"]["steps"]:
                for metric in ("sw2", "mode_tv"):
                    comparison = paired_comparison(
                        [_cell(r, sampler, steps)[metric] for r in etsdm],
                        [_cell(r, sampler, steps)[metric] for r in vanilla],
                        "lower",
                    )
                    quality.append({"group": group, "sampler": sampler, "steps": steps, "metric": metric,
                                    **comparison.to_dict()})  # fmt: skip
        comparison = paired_comparison(
            [early_mean(r["lipschitz"], threshold) for r in etsdm],
            [early_mean(r["lipschitz"], threshold) for r in vanilla],
            "lower",
        )
        lipschitz.append({"group": group, "measure": f"mean K(t), t < {threshold}", **comparison.to_dict()})
    return {"quality": quality, "lipschitz": lipschitz}


def aggregate(config: dict, work_dir: Path, wall_clock_seconds: float | None = None) -> dict:
    """Every unit's result and the paired comparisons, as one JSON-ready dict."""
    references, runs = load_results(config, work_dir)
    results = {
        "study": "etsdm_exact",
        "title": config.get("title", "E-TSDM, exact-score mixtures"),
        "config": config,
        "wall_clock_seconds": wall_clock_seconds,
        "unit_seconds": {
            "training": sum(r["train_seconds"] for r in runs),
            "measuring": sum(r["seconds"] - r["train_seconds"] for r in runs)
            + sum(r["seconds"] for r in references),
        },
        "references": references,
        "runs": runs,
    }
    results["comparisons"] = compare(results)
    return results


def _fmt(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 0.01:
        return f"{value:.3f}"
    return f"{value:.2e}"


def _ci(row: dict) -> str:
    return f"{_fmt(row['mean_difference'])} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"


def markdown_tables(results: dict) -> str:
    """The study's tables, generated from the results JSON only."""
    config = results["config"]
    threshold = config["etsdm"]["threshold"]
    settings = config["lipschitz"]
    seeds = len(config["seeds"])
    lines = [
        f"**K(t) against the exact target** (dt = {settings['dt']}, {settings['num_samples']} exact samples, "
        f"t = 0..{settings['t_max']}): mean K over t < {threshold} and over t ≥ {threshold}, K at t = 0, and "
        f"E-TSDM − vanilla of the early mean with its 95 % CI over {seeds} paired seeds.",
        "",
        f"| mixture | exact: t < {threshold} / ≥ {threshold} / K(0) | vanilla | E-TSDM | "
        "E-TSDM − vanilla, t < " + f"{threshold} [95 % CI] | verdict |",
        "|---|---|---|---|---|---|",
    ]
    lipschitz_rows = {row["group"]: row for row in results["comparisons"]["lipschitz"]}
    for group, *_ in groups(config):
        exact = next(r for r in results["references"] if r["group"] == group)["lipschitz"]

        def triple(items: list[dict]) -> str:
            early = statistics.fmean(early_mean(i, threshold) for i in items)
            late = statistics.fmean(early_mean(i, threshold, early=False) for i in items)
            first = statistics.fmean(i["values"][0] for i in items)
            return f"{_fmt(early)} / {_fmt(late)} / {_fmt(first)}"

        row = lipschitz_rows[group]
        lines.append(
            f"| {group} | {triple([exact])} | {triple([r['lipschitz'] for r in _runs(results, group, 'vanilla')])} | "
            f"{triple([r['lipschitz'] for r in _runs(results, group, 'etsdm')])} | {_ci(row)} | {row['verdict']} |"
        )
    error_t = results["runs"][0]["target_error"]["timesteps"]
    shown = [t for t in error_t if t in (0, 2, 10, 50, 200)] or error_t[:5]
    lines += [
        "",
        "**Does the trained network follow eps\\*?** RMS per coordinate of eps_θ(x_t, c(t)) − eps\\*(x_t, t) over "
        "noisy exact samples (mean over seeds; E-TSDM queried at f(t)):",
        "",
        "| mixture | model | " + " | ".join(f"t = {t}" for t in shown) + " |",
        "|---|---|" + "---|" * len(shown),
    ]
    for group, *_ in groups(config):
        for model in ("vanilla", "etsdm"):
            runs = _runs(results, group, model)
            errors = np.mean([r["target_error"]["rms_error"] for r in runs], axis=0)
            lines.append(
                f"| {group} | {model} | " + " | ".join(_fmt(errors[error_t.index(t)]) for t in shown) + " |"
            )
    lines += [
        "",
        f"**Sample quality** against {config['sampling']['num_samples']} exact samples: sliced Wasserstein-2 (SW2) "
        "and mode-weight total variation (TV), mean over seeds; E-TSDM − vanilla with its 95 % CI over "
        f'{seeds} paired seeds (negative = E-TSDM better); "exact" samples with eps\\* itself.',
    ]
    quality = results["comparisons"]["quality"]
    for group, *_ in groups(config):
        reference = next(r for r in results["references"] if r["group"] == group)
        lines += [
            "",
            f"*{group}* (exact vs exact SW2: {_fmt(reference['exact_vs_exact_sw2'])})",
            "",
            "| sampler | exact SW2 | vanilla SW2 | E-TSDM SW2 | Δ SW2 [95 % CI] | verdict | vanilla TV | E-TSDM TV | "
            "Δ TV [95 % CI] | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for sampler in config["sampling"]["samplers"]:
            for steps in config["sampling"]["steps"]:
                sw2, tv = (
                    next(
                        q
                        for q in quality
                        if (q["group"], q["sampler"], q["steps"], q["metric"]) == (group, sampler, steps, m)
                    )
                    for m in ("sw2", "mode_tv")
                )
                exact = _cell(reference, sampler, steps)["sw2"]
                lines.append(
                    f"| {SAMPLER_LABELS[sampler]}, {steps} | {_fmt(exact)} | {_fmt(sw2['baseline_mean'])} | "
                    f"{_fmt(sw2['model_mean'])} | {_ci(sw2)} | {sw2['verdict']} | {_fmt(tv['baseline_mean'])} | "
                    f"{_fmt(tv['model_mean'])} | {_ci(tv)} | {tv['verdict']} |"
                )
    lines += [
        "",
        "**Verdict counts** over the sampler × steps cells (claim: E-TSDM lowers the distance):",
        "",
    ]
    lines += ["| mixture | SW2: reproduced / contradicted / undecided | TV: reproduced / contradicted / undecided |",
              "|---|---|---|"]  # fmt: skip
    for group, *_ in groups(config):
        counts = []
        for metric in ("sw2", "mode_tv"):
            verdicts = [q["verdict"] for q in quality if q["group"] == group and q["metric"] == metric]
            counts.append(
                " / ".join(str(verdicts.count(v)) for v in ("reproduced", "contradicted", "undecided"))
            )
        lines.append(f"| {group} | {counts[0]} | {counts[1]} |")
    runs = results["runs"]
    lines += [
        "",
        f"Training: {runs[0]['parameters']:,}-parameter MLP, {config['training']['max_train_steps']} steps of batch "
        f"{config['training']['train_batch_size']}, {statistics.fmean(r['train_seconds'] for r in runs):.0f} s per model "
        f"(mean over {len(runs)} models).",
    ]
    if results.get("wall_clock_seconds"):
        lines.append(
            f"Wall-clock time of the study: {results['wall_clock_seconds'] / 60:.1f} min ({config['workers']} worker "
            f"processes × {config['threads_per_worker']} thread)."
        )
    return "\n".join(lines) + "\n"


def plot_lipschitz_panels(results: dict, path: Path) -> None:
    """K(t) of eps* next to the trained vanilla and E-TSDM networks: one panel per (mixture, spread)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = results["config"]
    names, spreads = list(config["mixtures"]), config["spreads"]
    figure, axes = plt.subplots(len(names), len(spreads), figsize=(3.6 * len(spreads), 2.9 * len(names)), dpi=110,
                                squeeze=False)  # fmt: skip
    for i, name in enumerate(names):
        for j, spread in enumerate(spreads):
            group = f"{name}-s{spread:g}"
            exact = next(r for r in results["references"] if r["group"] == group)
            curves = {"exact eps*": LipschitzResult.from_dict(exact["lipschitz"])}
            for model in ("vanilla", "etsdm"):
                curves[model] = [
                    LipschitzResult.from_dict(r["lipschitz"]) for r in _runs(results, group, model)
                ]
            plot_lipschitz(curves, axis=axes[i][j], title=f"{name}, spread {spread:g}")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_quality(results: dict, path: Path, metric: str = "sw2") -> None:
    """Distance vs steps per sampler: vanilla and E-TSDM mean with the 95 % CI of the mean, exact eps* as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    from .stats import student_t_975

    config = results["config"]
    samplers, steps = config["sampling"]["samplers"], config["sampling"]["steps"]
    group_names = [g for g, *_ in groups(config)]
    figure, axes = plt.subplots(len(group_names), len(samplers), figsize=(2.9 * len(samplers), 2.3 * len(group_names)),
                                dpi=110, squeeze=False)  # fmt: skip
    for i, group in enumerate(group_names):
        reference = next(r for r in results["references"] if r["group"] == group)
        for j, sampler in enumerate(samplers):
            axis = axes[i][j]
            axis.plot(steps, [_cell(reference, sampler, s)[metric] for s in steps], "k--", label="exact eps*")
            for model in ("vanilla", "etsdm"):
                runs = _runs(results, group, model)
                values = np.array([[_cell(r, sampler, s)[metric] for s in steps] for r in runs])
                mean = values.mean(axis=0)
                half = student_t_975(len(runs) - 1) * values.std(axis=0, ddof=1) / math.sqrt(len(runs))
                (line,) = axis.plot(steps, mean, "o-", markersize=3, label=model)
                axis.fill_between(
                    steps, mean - half, mean + half, color=line.get_color(), alpha=0.25, linewidth=0
                )
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_xticks(steps)
            axis.set_xticklabels([str(s) for s in steps], fontsize=7)
            axis.xaxis.set_minor_formatter(NullFormatter())  # only the step counts are labelled
            axis.tick_params(labelsize=7)
            axis.set_title(f"{group}, {SAMPLER_LABELS[sampler]}", fontsize=8)
            if i == 0 and j == 0:
                axis.legend(fontsize=6)
    figure.suptitle(
        f"{METRIC_LABELS[metric]} to exact samples vs sampling steps (band: 95 % CI of the mean)", fontsize=9
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_outputs(results: dict, output_dir: Path, work_dir: Path | None = None) -> str:
    """Figures into ``output_dir``; returns the markdown tables."""
    plot_lipschitz_panels(results, output_dir / "exact_lipschitz.png")
    plot_quality(results, output_dir / "exact_quality.png")
    return markdown_tables(results)
