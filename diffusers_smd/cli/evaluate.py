"""``diffusers-smd eval``: sample a trained pipeline and score it; results go to ``eval_results.json``."""

from __future__ import annotations

import argparse
import os

from ..atomic import read_json, write_json
from .common import CLIError, add_sampling_flags, check_new_file, load_pipeline, resolve_device

RESULTS_FILE = "eval_results.json"


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "eval",
        help="Frechet digits distance + class histogram against the held-out digits.",
        description="Generate --num_images samples and compare them with the held-out digits: the Frechet distance "
        "in the feature space of the package's small digits classifier (a stand-in for FID at this scale), plus "
        "the classifier's predicted-class histogram. Results are added to eval_results.json in the pipeline folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_sampling_flags(parser, default_steps=20, default_images=500)
    parser.add_argument(
        "--results_file",
        default=None,
        help="Where to write the results (default: eval_results.json in the pipeline folder; required for a Hub repo).",
    )
    parser.set_defaults(run=run)


def read_eval_results(path: str) -> list[dict]:
    """The result entries stored at ``path`` (an empty list when the file does not exist)."""
    if not os.path.isfile(path):
        return []
    existing = read_json(path)
    if not isinstance(existing, list):
        raise CLIError(f"{path} does not hold a list of results; move it away first")
    return existing


def update_eval_results(path: str, entries: list[dict]) -> list[dict]:
    """Merge ``entries`` into the JSON list at ``path``: an entry replaces one with the same metric, scheduler
    and steps. Written atomically."""

    def key(entry):
        return entry.get("metric"), entry.get("scheduler"), entry.get("num_inference_steps")

    new_keys = {key(e) for e in entries}
    merged = [e for e in read_eval_results(path) if key(e) not in new_keys] + entries
    write_json(path, merged, sort_keys=False)
    return merged


def evaluate_pipeline(
    pipeline, scheduler_name: str, num_inference_steps: int, num_images: int, seed: int, batch_size: int
) -> tuple[list[dict], str]:
    """Sample ``num_images`` and score them against the held-out digits; return (result entries, scheduler name)."""
    import torch

    from ..metrics import compute_digits_metrics
    from ..sampling import generate, make_scheduler

    if pipeline.unet.config.get("in_channels") != 1:
        raise CLIError(
            "eval scores the Frechet *digits* distance, which needs a 1-channel (grey) digits model; this model "
            f"has {pipeline.unet.config.get('in_channels')} channels"
        )
    scheduler, resolved = make_scheduler(scheduler_name, pipeline.scheduler.config)
    images = generate(
        pipeline,
        num_images,
        num_inference_steps,
        seed=seed,
        batch_size=batch_size,
        scheduler=scheduler,
        description=f"--scheduler {resolved}",
    )
    samples = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    metrics = compute_digits_metrics(samples, "heldout")
    entries = []
    for metric in ("frechet_digits_distance", "class_histogram"):
        value = metrics[metric]
        entries.append(
            {
                "metric": metric,
                "scheduler": resolved,
                "num_inference_steps": num_inference_steps,
                "value": value.tolist() if hasattr(value, "tolist") else value,
                "num_samples": num_images,
                "seed": seed,
                "reference": "digits-heldout",
            }
        )
    return entries, resolved


def run(args: argparse.Namespace) -> int:
    results_file = args.results_file
    if results_file is None:
        if not os.path.isdir(os.path.expanduser(args.pipeline)):
            raise CLIError("--results_file is required when the pipeline is a Hub repo id")
        results_file = os.path.join(os.path.expanduser(args.pipeline), RESULTS_FILE)
    else:
        check_new_file(results_file, "--results_file", overwrite=True)
    read_eval_results(results_file)  # a corrupt file is refused before sampling
    device = resolve_device(args.device)
    pipeline = load_pipeline(args.pipeline, device)
    entries, resolved = evaluate_pipeline(
        pipeline, args.scheduler, args.num_inference_steps, args.num_images, args.seed, args.batch_size
    )
    update_eval_results(results_file, entries)
    histogram = ", ".join(f"{v:.2f}" for v in entries[1]["value"])
    print(
        f"Frechet digits distance ({resolved}, {args.num_inference_steps} steps, {args.num_images} samples): "
        f"{entries[0]['value']:.3f}"
    )
    print(f"predicted-class histogram (digits 0-9): {histogram}")
    print(f"results added to {os.path.abspath(results_file)}")
    return 0
