"""``diffusers-smd eval``: sample a trained pipeline and score it; results go to ``eval_results.json``.

Metrics (``--metric``, one or more): ``fdd``, the Frechet digits distance (the offline default: the package's
small digits classifier, nothing to download), and ``fid`` / ``kid`` through torchmetrics on the Inception
network of torch-fidelity, whose weights must already be on this machine (``--inception_weights`` or
torch-fidelity's cache). All are computed against ``--reference``: the built-in held-out digits, an image
folder or a data set. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import os

from ..atomic import read_json, write_json
from .common import CLIError, add_sampling_flags, check_new_file, load_pipeline, positive_int, resolve_device

RESULTS_FILE = "eval_results.json"
#: The ``--metric`` choices; ``fdd`` is the default (offline, no extra package).
METRICS = ("fdd", "fid", "kid")
#: The default ``--reference``: the built-in digits' held-out split (359 images).
DEFAULT_REFERENCE = "digits-heldout"


def add_parser(commands) -> None:
    from ..metrics import INCEPTION_WEIGHTS_FILE

    parser = commands.add_parser(
        "eval",
        help="Score samples: Frechet digits distance (default, offline), or FID / KID against real images.",
        description="Generate --num_images samples and compare them with --reference images. fdd (the default): "
        "the Frechet distance in the feature space of the package's small digits classifier (a stand-in for FID "
        "at this scale) and the classifier's predicted-class histogram. fid / kid: FID and KID through torchmetrics "
        'on the Inception network of torch-fidelity (pip install "diffusers-smd[metrics]"; the weights must be on '
        "this machine, nothing is downloaded). Results are added to eval_results.json in the pipeline folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_sampling_flags(parser, default_steps=20, default_images=500)
    parser.add_argument(
        "--metric",
        nargs="+",
        choices=METRICS,
        default=["fdd"],
        help="One or more metrics, computed on the same samples. fdd: Frechet digits distance (offline); fid / kid: "
        "Inception FID / KID (torchmetrics + torch-fidelity and local Inception weights).",
    )
    parser.add_argument(
        "--reference",
        default=DEFAULT_REFERENCE,
        help=f"The real images: {DEFAULT_REFERENCE!r} (the built-in digits' held-out split, 359 images), an image "
        "folder, a local data set folder, or a Hub data set id in the local cache (its train split). They are "
        "resized (shorter side, bilinear) and centre-cropped to the model's resolution and channels.",
    )
    parser.add_argument(
        "--reference_max_images",
        type=positive_int,
        default=None,
        help="Use only the first N reference images (default: all).",
    )
    parser.add_argument(
        "--inception_weights",
        default=None,
        help=f"fid / kid: the Inception weights file {INCEPTION_WEIGHTS_FILE} (default: torch-fidelity's cache, "
        "$TORCH_HOME/hub/checkpoints/). Never downloaded; a missing file is an error saying where to get it.",
    )
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
    """Merge ``entries`` into the JSON list at ``path``: an entry replaces one with the same metric, scheduler,
    steps and reference. Written atomically."""

    def key(entry):
        return (
            entry.get("metric"),
            entry.get("scheduler"),
            entry.get("num_inference_steps"),
            entry.get("reference"),
        )

    new_keys = {key(e) for e in entries}
    merged = [e for e in read_eval_results(path) if key(e) not in new_keys] + entries
    write_json(path, merged, sort_keys=False)
    return merged


def load_reference_images(
    reference: str, resolution: int, num_channels: int, max_images: int | None = None
) -> tuple[object, str]:
    """``(images, name)``: the ``--reference`` images as a float (N, C, R, R) tensor in [-1, 1] at the model's
    resolution and channels, and the name recorded in eval_results.json (an absolute path for a folder)."""
    from ..data import load_training_images
    from ..digits import load_digits_images

    if reference == DEFAULT_REFERENCE:
        images, _ = load_digits_images("heldout", resolution=resolution)
        images = images.expand(-1, num_channels, -1, -1)[:max_images].contiguous()
        name = reference
    else:
        import torch

        path = os.path.expanduser(reference)
        is_folder = os.path.isdir(path)
        if not is_folder and reference.startswith(("/", ".", "~")):
            raise CLIError(f"--reference {reference!r}: no such folder")
        try:
            data = load_training_images(
                dataset_name=path if is_folder else reference,
                resolution=resolution,
                num_channels=num_channels,
                max_samples=max_images,
            )
        except ValueError as error:
            raise CLIError(
                f"--reference {reference!r} could not be read as an image folder or data set: {error}"
            ) from error
        images = torch.stack([data[index]["input"] for index in range(len(data))])
        name = os.path.abspath(path) if is_folder else reference
    if len(images) < 2:
        raise CLIError(f"--reference {reference!r}: the metrics need at least 2 images, found {len(images)}")
    return images, name


def _entry(
    metric: str, value, resolved: str, steps: int, num_images: int, seed: int, reference: str, **extra
):
    return {
        "metric": metric,
        "scheduler": resolved,
        "num_inference_steps": steps,
        "value": value,
        "num_samples": num_images,
        "seed": seed,
        "reference": reference,
        **extra,
    }


def evaluate_pipeline(
    pipeline,
    scheduler_name: str,
    num_inference_steps: int,
    num_images: int,
    seed: int,
    batch_size: int,
    *,
    metrics=("fdd",),
    reference_images=None,
    reference_name: str = DEFAULT_REFERENCE,
    feature_extractor=None,
    inception_weights: str | None = None,
) -> tuple[list[dict], str]:
    """Sample ``num_images`` and score them; return (result entries, resolved scheduler name).

    ``reference_images`` (float (N, C, H, W) in [-1, 1]) default to the held-out digits at the model's size.
    ``fid`` / ``kid`` use ``feature_extractor`` when given, else the Inception network
    (:func:`diffusers_smd.metrics.inception_feature_extractor` with ``inception_weights``).
    """
    import torch

    from .. import metrics as image_metrics
    from ..sampling import generate, make_scheduler

    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty list of {METRICS}, got {list(metrics)!r}")
    config = pipeline.unet.config
    if "fdd" in metrics and config.get("in_channels") != 1:
        raise CLIError(
            "--metric fdd scores the Frechet *digits* distance, which needs a 1-channel (grey) digits model; this "
            f"model has {config.get('in_channels')} channels (use --metric fid or kid)"
        )
    if reference_images is None:
        reference_images, reference_name = load_reference_images(
            DEFAULT_REFERENCE, config.get("sample_size"), config.get("in_channels")
        )
    wants_inception = [m for m in metrics if m in image_metrics.IMAGE_METRICS]
    if wants_inception and feature_extractor is None:
        feature_extractor = image_metrics.inception_feature_extractor(inception_weights).to(pipeline.device)
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
    common = dict(
        resolved=resolved,
        steps=num_inference_steps,
        num_images=num_images,
        seed=seed,
        reference=reference_name,
        num_reference=len(reference_images),
    )
    entries = []
    if "fdd" in metrics:
        scores = image_metrics.compute_digits_metrics(samples, reference_images)
        entries.append(_entry("frechet_digits_distance", scores["frechet_digits_distance"], **common))
        entries.append(_entry("class_histogram", list(scores["class_histogram"]), **common))
    if wants_inception:
        scores = image_metrics.compute_image_metrics(
            samples, reference_images, wants_inception, feature_extractor=feature_extractor, seed=seed
        )
        if "fid" in scores:
            entries.append(_entry("fid", scores["fid"], **common))
        if "kid" in scores:
            entries.append(
                _entry(
                    "kid",
                    scores["kid"],
                    **common,
                    std=scores["kid_std"],
                    subset_size=scores["kid_subset_size"],
                )
            )
    return entries, resolved


def _describe(entry: dict) -> str | None:
    setting = (
        f"{entry['scheduler']}, {entry['num_inference_steps']} steps, {entry['num_samples']} samples vs "
        f"{entry['num_reference']} of {entry['reference']}"
    )
    if entry["metric"] == "frechet_digits_distance":
        return f"Frechet digits distance ({setting}): {entry['value']:.3f}"
    if entry["metric"] == "class_histogram":
        return "predicted-class histogram (digits 0-9): " + ", ".join(f"{v:.2f}" for v in entry["value"])
    if entry["metric"] == "fid":
        return f"FID ({setting}): {entry['value']:.3f}"
    if entry["metric"] == "kid":
        return f"KID ({setting}; {entry['subset_size']}-image subsets): {entry['value']:.5f} +- {entry['std']:.5f}"
    return None


def run(args: argparse.Namespace) -> int:
    from .. import metrics as image_metrics

    if args.num_images < 2:
        raise CLIError(
            f"--num_images must be at least 2 for eval (a covariance needs two images), got {args.num_images}"
        )
    results_file = args.results_file
    if results_file is None:
        if not os.path.isdir(os.path.expanduser(args.pipeline)):
            raise CLIError("--results_file is required when the pipeline is a Hub repo id")
        results_file = os.path.join(os.path.expanduser(args.pipeline), RESULTS_FILE)
    else:
        check_new_file(results_file, "--results_file", overwrite=True)
    read_eval_results(results_file)  # a corrupt file is refused before sampling
    metrics = list(dict.fromkeys(args.metric))
    if any(m in image_metrics.IMAGE_METRICS for m in metrics):
        try:  # before any work: the libraries and the weights (nothing is downloaded)
            image_metrics.check_inception_available(args.inception_weights)
        except (ImportError, FileNotFoundError) as error:
            raise CLIError(f"--metric {' '.join(metrics)}: {error}") from error
    device = resolve_device(args.device)
    pipeline = load_pipeline(args.pipeline, device)
    config = pipeline.unet.config
    reference_images, reference_name = load_reference_images(
        args.reference, config.get("sample_size"), config.get("in_channels"), args.reference_max_images
    )
    try:
        entries, _ = evaluate_pipeline(
            pipeline,
            args.scheduler,
            args.num_inference_steps,
            args.num_images,
            args.seed,
            args.batch_size,
            metrics=metrics,
            reference_images=reference_images,
            reference_name=reference_name,
            inception_weights=args.inception_weights,
        )
    except (ImportError, FileNotFoundError) as error:
        raise CLIError(f"--metric {' '.join(metrics)}: {error}") from error
    update_eval_results(results_file, entries)
    for entry in entries:
        print(_describe(entry))
    print(f"results added to {os.path.abspath(results_file)}")
    return 0
