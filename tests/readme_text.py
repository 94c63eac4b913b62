"""The text users read (README.md, docs/*.md, model_cards/README.md): sections, code blocks, generated tables.

Tables that restate facts of the code or of a results JSON (the training flags, the sampler names, the
quickstart recipe and figures, benchmark figures) are generated, never typed: each sits between
``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` and tests/test_docs.py checks that it equals
what :data:`GENERATED` makes today. After changing the code or rerunning a benchmark, rewrite them with

    python -m tests.readme_text --write
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import re
import sys
from collections.abc import Callable

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
RESULTS = REPO_ROOT / "benchmarks" / "results"
QUICKSTART_RESULTS = DOCS / "training"


def readme_section(title: str, path: pathlib.Path = README) -> str:
    """The text of a markdown file from the heading ``## {title}`` up to the next ``## `` heading."""
    text = path.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def doc_pages() -> list[pathlib.Path]:
    """Every markdown page a user reads: the README, the model-card pointer and each page of the docs site."""
    return [README, REPO_ROOT / "model_cards" / "README.md", *sorted(DOCS.glob("*.md"))]


@dataclasses.dataclass(frozen=True)
class Block:
    """A fenced code block of a page: its language, its text (dedented) and where it starts."""

    path: pathlib.Path
    line: int
    language: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<language>[\w+-]*)[^\n]*$")


def fenced_blocks(path: pathlib.Path) -> list[Block]:
    """The fenced code blocks of ``path``, also those indented inside list items."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        indent, fence = match["indent"], match["fence"]
        body, end = [], index + 1
        while end < len(lines) and lines[end].strip() != fence:
            line = lines[end]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            end += 1
        if end == len(lines):
            raise ValueError(f"{path}:{index + 1}: a code block is never closed")
        blocks.append(Block(path, index + 1, match["language"].lower(), "\n".join(body) + "\n"))
        index = end + 1
    return blocks


# -- generated tables ------------------------------------------------------------------------------------
def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _default(value) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "off" if value is False else "on"
    if isinstance(value, tuple):
        return "`" + ",".join(str(v) for v in value) + "`"
    return f"`{value}`"


def training_flags() -> str:
    """Every flag of train_smd.py / `diffusers-smd train`, by argument group, from UnconditionalTrainingConfig."""
    from diffusers_smd.training import UnconditionalTrainingConfig
    from diffusers_smd.training.arguments import _fields

    groups: dict[str, list] = {}
    for field in _fields(UnconditionalTrainingConfig):
        groups.setdefault(field.metadata["group"], []).append(field)
    parts = []
    for group, fields in groups.items():
        rows = ["| flag | default | on resume | meaning |", "|---|---|---|---|"]
        for field in fields:
            meta = field.metadata
            flag = f"`--{field.name}`"
            if meta["choices"] is not None:
                flag += " {" + ",".join(str(c) for c in meta["choices"]) + "}"
            resume = "may change" if meta["resume"] == "free" else "fixed"
            rows.append(f"| {flag} | {_default(field.default)} | {resume} | {_cell(meta['help'])} |")
        parts.append(f"**{group}**\n\n" + "\n".join(rows))
    return "\n\n".join(parts)


def free_on_resume_flags() -> str:
    """The settings a resumed run may change (arguments.free_on_resume)."""
    from diffusers_smd.training import UnconditionalTrainingConfig
    from diffusers_smd.training.arguments import free_on_resume

    return ", ".join(f"`--{name}`" for name in free_on_resume(UnconditionalTrainingConfig)) + "."


def sampler_names() -> str:
    """The `--scheduler` names of `sample` / `eval` (diffusers_smd.sampling.SCHEDULERS) and their classes."""
    from diffusers_smd.sampling import AUTO, DEFAULT_SAMPLER, ETSDM_PREFIX, SCHEDULERS, scheduler_choices
    from diffusers_smd.schedulers import ETSDM_VARIANTS

    choices = scheduler_choices()
    rows = ["| name | diffusers class | settings | E-TSDM variant (`etsdm-<name>`) |", "|---|---|---|---|"]
    for name, spec in SCHEDULERS.items():
        variant = ETSDM_VARIANTS.get(spec.scheduler_class)
        settings = ", ".join(f"`{k}={v!r}`" for k, v in spec.settings.items()) or ""
        etsdm = f"`{ETSDM_PREFIX}{name}`: `{variant.__name__}`" if ETSDM_PREFIX + name in choices else "none"
        rows.append(f"| `{name}` | `{spec.class_name}` | {settings} | {etsdm} |")
    rows.append(f"| `{AUTO}` | as `{DEFAULT_SAMPLER}` | | as `{ETSDM_PREFIX}{DEFAULT_SAMPLER}` |")
    return "\n".join(rows)


def quickstart_recipe() -> str:
    """The training settings of `diffusers-smd quickstart` (QUICKSTART_SETTINGS) and its grids."""
    from diffusers_smd.cli.quickstart import QUICKSTART_SAMPLERS, QUICKSTART_SETTINGS, QUICKSTART_STEPS

    rows = ["| setting | value |", "|---|---|"]
    rows += [f"| `--{name}` | {_default(value)} |" for name, value in QUICKSTART_SETTINGS.items()]
    rows.append(f"| `--max_train_steps` | `{QUICKSTART_STEPS}` (the quickstart's own `--max_train_steps`) |")
    grids = ", ".join(f"`{sampler}` with {steps} steps" for sampler, steps, _ in QUICKSTART_SAMPLERS)
    return "\n".join(rows) + f"\n\nGrids: {grids}; the first one is also scored."


def quickstart_figures() -> str:
    """The committed measurement of the main job (docs/training/quickstart_*.json)."""
    timing = json.loads((QUICKSTART_RESULTS / "quickstart_timing.json").read_text())
    summary = json.loads((QUICKSTART_RESULTS / "quickstart_run_summary.json").read_text())
    counts = summary["parameter_counts"]
    rows = ["| | value |", "|---|---|"]
    rows.append(
        f"| total wall-clock time | **{timing['total_seconds']:.0f} s** (training {timing['train_seconds']:.0f} s, "
        f"the two grids {timing['sample_seconds']:.0f} s, evaluation {timing['eval_seconds']:.0f} s) |"
    )
    rows.append(f"| training steps, batch | {summary['global_step']}, {summary['total_batch_size']} |")
    rows.append(
        f"| parameters | {counts['total']:,} ({counts['unet']:,} UNet, {counts['smd_modules']:,} SMD modules) |"
    )
    rows.append(f"| final training loss | {summary['final_loss']:.3f} |")
    return "\n".join(rows)


def _mean_std(entry: dict, key: str, digits: int = 3) -> str:
    return f"{entry[key + '_mean']:.{digits}f} ± {entry[key + '_std']:.{digits}f}"


def mixture_toy_table(name: str = "smd_mixture_toy.json") -> str:
    """The objectives on the 7x7 grid of Gaussians (bench_smd_mixture_toy.py), best value per step count in bold."""
    results = json.loads((RESULTS / name).read_text())
    summary = results["summary"]
    rows = [
        "| steps | objective | sliced W2 ↓ | within 3 sigma ↑ | modes hit ↑ |",
        "|---:|---|---|---|---|",
    ]
    for steps in sorted({e["num_steps"] for e in summary}):
        entries = [e for e in summary if e["num_steps"] == steps]
        best_w2 = min(e["sliced_w2_mean"] for e in entries)
        best_modes = max(e["modes_hit_mean"] for e in entries)
        for e in entries:
            w2 = _mean_std(e, "sliced_w2")
            modes = _mean_std(e, "modes_hit", 1)
            if len(entries) > 1 and e["sliced_w2_mean"] == best_w2:
                w2 = f"**{w2}**"
            if len(entries) > 1 and e["modes_hit_mean"] == best_modes:
                modes = f"**{modes}**"
            rows.append(
                f"| {steps} | `{e['objective']}` | {w2} | {_mean_std(e, 'within_3_sigma')} | {modes} |"
            )
    floor_w2 = results["exact_vs_exact_sliced_w2"]
    floor_within, floor_modes = results["exact_within_3_sigma_and_modes_hit"]
    counts = ", ".join(f"`{k}` {v:,}" for k, v in results["parameter_counts"].items())
    return (
        "\n".join(rows)
        + f"\n\nExact samples against exact samples: sliced W2 {floor_w2:.3f}, within 3 sigma {floor_within:.3f}, "
        f"{floor_modes} modes hit. Parameters: {counts}. Wall-clock time of the run: "
        f"{results['wall_seconds'] / 60:.1f} min."
    )


def train_step_figures() -> str:
    """Training step time per objective (bench_train_step.py)."""
    r = json.loads((RESULTS / "train_step.json").read_text())
    medians = r["median_step_seconds"]
    rows = ["| objective | median step | ratio to vanilla | parameters |", "|---|---|---|---|"]
    for name, seconds in medians.items():
        ratio = seconds / medians["vanilla"]
        rows.append(f"| `{name}` | {seconds:.2f} s | {ratio:.2f} | {r['parameters'][name]:,} |")
    verdict = "met" if r["ratio_smd_over_vanilla"] <= r["target_smd_over_vanilla"] else "not met"
    return "\n".join(rows) + (
        f"\n\nTarget: `smd` / `vanilla` <= {r['target_smd_over_vanilla']}: {verdict} "
        f"({r['ratio_smd_over_vanilla']:.3f}). Torch threads: {r['config']['torch_threads']}; "
        f"{r['machine']['cpu_count']} CPU cores."
    )


def smd_forward_figures() -> str:
    """SMDUNet2DModel against the UNet2DModel it wraps (bench_smd_forward.py)."""
    r = json.loads((RESULTS / "smd_forward.json").read_text())
    seconds, memory, params = r["median_seconds"], r["peak_memory"], r["parameters"]
    rows = ["| | `UNet2DModel` | `SMDUNet2DModel` | ratio |", "|---|---|---|---|"]
    rows.append(
        f"| forward time (median of {r['repeats']}) | {seconds['unet']:.2f} s | {seconds['smd']:.2f} s | "
        f"**{r['time_ratio']:.3f}** (target <= {r['time_ratio_target']}) |"
    )
    rows.append(
        f"| peak memory growth of one forward | {memory['unet_peak_growth_mib']:.1f} MiB | "
        f"{memory['smd_peak_growth_mib']:.1f} MiB | {memory['ratio']:.3f} |"
    )
    rows.append(
        f"| parameters | {params['unet']:,} | {params['smd']:,} | {params['overhead_ratio']:.3f} "
        f"(identifier {params['identifier']:,}, hypernetworks {params['hypernetworks']:,}) |"
    )
    share = r["overhead_share"]
    return "\n".join(rows) + (
        f"\n\nOf the plain UNet's forward time, the identifier costs {share['identifier']:.1%} and the "
        f"hypernetworks {share['hypernetworks']:.1%}."
    )


def etsdm_overhead_figures() -> str:
    """The headline of bench_etsdm_schedulers.py (the full table is in docs/etsdm.md)."""
    r = json.loads((RESULTS / "etsdm_schedulers.json").read_text())
    worst = max(r["results"], key=lambda e: e["ratio"])
    return (
        f"{len(r['results'])} schedulers; largest ratio E-TSDM / parent {r['max_ratio']:.3f} "
        f"(`{worst['parent']}`), target <= {r['target_ratio']}; {r['steps']}-step loop, median of "
        f"{r['repeats']} repeats, {r['torch_threads']} torch thread."
    )


def etsdm_ratios_line() -> str:
    """All ratios of bench_etsdm_schedulers.py in one line, for the README (the table is in docs/etsdm.md)."""
    r = json.loads((RESULTS / "etsdm_schedulers.json").read_text())
    ratios = ", ".join(f"{e['parent'].removesuffix('Scheduler')} {e['ratio']:.3f}" for e in r["results"])
    return f"50-step loop time, E-TSDM variant / parent (target <= {r['target_ratio']}): {ratios}."


def dilation_summary() -> str:
    """The dilation benchmark's verdict table (one row per target), rendered from its committed JSON by the
    benchmark's own renderer; the full tables are in docs/dilation.md."""
    from benchmarks.dilation.report import render_summary_table, render_verdict

    results = json.loads((RESULTS / "dilation_benchmark.json").read_text())
    s = results["settings"]
    return (
        f"{s['budget']} target evaluations per sample for every method, {s['num_samples']} samples, mean ± 95 % "
        f"interval over {s['num_seeds']} seeds, lower is better, best in bold; SMC, AIS and PT are given the "
        "target's true scale.\n\n" + render_summary_table(results) + "\n\n" + render_verdict(results)
    )


def benchmarks_summary() -> str:
    """One row per benchmark: what it compares and its headline figure, from the results JSON."""
    step = json.loads((RESULTS / "train_step.json").read_text())
    forward = json.loads((RESULTS / "smd_forward.json").read_text())
    etsdm = json.loads((RESULTS / "etsdm_schedulers.json").read_text())
    toy = {
        (e["objective"], e["num_steps"]): e
        for e in json.loads((RESULTS / "smd_mixture_toy.json").read_text())["summary"]
    }
    timing = json.loads((QUICKSTART_RESULTS / "quickstart_timing.json").read_text())
    rows = [
        "| script | compares | headline | details |",
        "|---|---|---|---|",
        f"| `bench_train_step.py` | one training step of `smd` and `smd-mixture` against `vanilla`, same UNet | "
        f"`smd` / `vanilla` {step['ratio_smd_over_vanilla']:.2f} (goal <= {step['target_smd_over_vanilla']}); "
        f"`smd-mixture` / `vanilla` {step['ratio_smd_mixture_over_vanilla']:.2f} | [below](#training-step-time) |",
        f"| `bench_smd_forward.py` | `SMDUNet2DModel` against the `UNet2DModel` it wraps: time, peak memory, "
        f"parameters | time {forward['time_ratio']:.3f} (goal <= {forward['time_ratio_target']}), memory "
        f"{forward['peak_memory']['ratio']:.3f} | [below](#smd-forward-cost) |",
        f"| `bench_etsdm_schedulers.py` | each of the {len(etsdm['results'])} E-TSDM schedulers against its diffusers "
        f"parent, {etsdm['steps']}-step loop | largest ratio {etsdm['max_ratio']:.3f} (goal <= {etsdm['target_ratio']}) "
        "| [below](#e-tsdm-scheduler-overhead) |",
        "| `bench_smd_mixture_toy.py` | the three objectives on a 7x7 grid of Gaussians, 2 to 100 backward steps | "
        f"2 steps, sliced W2: `smd-mixture` {toy[('smd-mixture', 2)]['sliced_w2_mean']:.2f}, `vanilla` "
        f"{toy[('vanilla', 2)]['sliced_w2_mean']:.2f}, `smd` {toy[('smd', 2)]['sliced_w2_mean']:.2f} "
        "| [SMD](smd.md#which-objective-works-7x7-grid-of-gaussians) |",
        "| `bench_dilation_path.py` | the dilation-path sampler (plain and with mode reweighting) against ULA, MALA, "
        "annealed Langevin, SMC, AIS and parallel tempering at an equal budget of target evaluations, 5 seeds | "
        "entropic W2, MMD, mode-weight TV, modes found, sliced KS, log Z error and ESS per target "
        "(`dilation_benchmark.json`, scatter plots, `dilation_budget_curve.png`) | the dilation-path page |",
        "| `evidence/run.py --config evidence/studies/*.yaml` | three studies: E-TSDM on exact-score mixtures, "
        "E-TSDM on digits, SMD with few backward steps; 5 paired seeds per cell | a verdict per claim with its 95 % "
        "interval | [the evidence page](evidence.md) |",
        f"| `diffusers-smd quickstart` | the main job, end to end | {timing['total_seconds']:.0f} s in all | "
        "[Quickstart](quickstart.md#measured) |",
    ]
    return "\n".join(rows)


#: generated block name -> (page, generator)
GENERATED: dict[str, tuple[pathlib.Path, Callable[[], str]]] = {
    "training-flags": (DOCS / "training.md", training_flags),
    "free-on-resume": (DOCS / "training.md", free_on_resume_flags),
    "sampler-names": (DOCS / "sampling.md", sampler_names),
    "quickstart-recipe": (DOCS / "quickstart.md", quickstart_recipe),
    "quickstart-figures": (DOCS / "quickstart.md", quickstart_figures),
    "mixture-toy": (DOCS / "smd.md", mixture_toy_table),
    "mixture-toy-no-xi": (DOCS / "smd.md", lambda: mixture_toy_table("smd_mixture_toy_no_xi.json")),
    "benchmarks-summary": (DOCS / "benchmarks.md", benchmarks_summary),
    "train-step": (DOCS / "benchmarks.md", train_step_figures),
    "smd-forward": (DOCS / "benchmarks.md", smd_forward_figures),
    "etsdm-overhead": (DOCS / "benchmarks.md", etsdm_overhead_figures),
    "etsdm-ratios": (README, etsdm_ratios_line),
    "dilation-summary": (README, dilation_summary),
}


def _marked(name: str) -> re.Pattern:
    return re.compile(
        rf"(<!-- generated:{re.escape(name)} [^\n]*-->\n)(.*?)(<!-- /generated:{re.escape(name)} -->)", re.S
    )


def generated_block(text: str, name: str) -> str | None:
    """The current content of the generated block ``name`` in ``text`` (None when it has none)."""
    match = _marked(name).search(text)
    return None if match is None else match[2]


def replace_generated(text: str, name: str, content: str) -> str:
    """``text`` with the generated block ``name`` holding ``content``."""
    if _marked(name).search(text) is None:
        raise ValueError(f"no <!-- generated:{name} ... --> block")
    return _marked(name).sub(lambda m: m[1] + "\n" + content.strip() + "\n\n" + m[3], text, count=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check or rewrite the generated tables of the docs.")
    parser.add_argument("--write", action="store_true", help="rewrite every generated block in place")
    args = parser.parse_args(argv)
    stale = []
    for name, (page, make) in GENERATED.items():
        text = page.read_text(encoding="utf-8")
        updated = replace_generated(text, name, make())
        if updated != text:
            stale.append(f"{page.relative_to(REPO_ROOT)}: {name}")
            if args.write:
                page.write_text(updated, encoding="utf-8")
    for entry in stale:
        print(("rewrote " if args.write else "stale: ") + entry)
    return 0 if args.write or not stale else 1


if __name__ == "__main__":
    sys.exit(main())
