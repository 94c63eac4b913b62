"""The ``diffusers-smd`` command: train, sample, eval, publish, quickstart.

* ``train``: runs the training loop (:mod:`diffusers_smd.training`, the same code as
  ``training/train_smd.py``) through ``accelerate launch``, on one or several processes.
* ``sample``: loads a pipeline folder or Hub repo, swaps in the chosen scheduler, writes a PNG grid.
* ``eval``: Frechet digits distance and class histogram against the held-out digits
  (:mod:`diffusers_smd.metrics`); results go to ``eval_results.json`` in the pipeline folder.
* ``publish``: uploads a trained pipeline folder to the Hub (:func:`diffusers_smd.hub.publish_main`).
* ``quickstart``: the README's main job: trains a small SMD + E-TSDM model on the built-in digits
  on CPU, samples it with DPM-Solver (10 steps) and DDIM (50 steps), writes grids, evaluates.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

__all__ = ["SCHEDULER_CHOICES", "build_parser", "main", "make_scheduler", "pick_output_dir"]

#: Scheduler names accepted by ``sample`` / ``eval``: name -> (class name, extra config).
SCHEDULER_CHOICES = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "etsdm-ddpm": ("ETSDMDDPMScheduler", {}),
    "etsdm-ddim": ("ETSDMDDIMScheduler", {}),
    "etsdm-dpmsolver++": ("ETSDMDPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
}
AUTO = "auto"

QUICKSTART_DEFAULT_DIR = "smd-quickstart"


class CLIError(Exception):
    """A user-facing error of the command line (printed without a traceback)."""


# ----------------------------------------------------------------------------- schedulers and loading


def _is_etsdm_config(config) -> bool:
    return "etsdm_threshold" in config and config["etsdm_threshold"] is not None


def make_scheduler(name: str, base_config):
    """A scheduler of family ``name`` (see :data:`SCHEDULER_CHOICES`) built from a pipeline's scheduler config.

    ``auto`` picks DPM-Solver++, in its E-TSDM variant when the model was trained with E-TSDM.
    """
    if name == AUTO:
        name = "etsdm-dpmsolver++" if _is_etsdm_config(base_config) else "dpmsolver++"
    if name not in SCHEDULER_CHOICES:
        raise ValueError(f"--scheduler must be one of {[AUTO, *SCHEDULER_CHOICES]}, got {name!r}")
    class_name, extra = SCHEDULER_CHOICES[name]
    if class_name.startswith("ETSDM"):
        from . import schedulers as module
    else:
        import diffusers as module
    scheduler_class = getattr(module, class_name)
    extra = dict(extra)
    if (
        base_config.get("clip_sample")
        and "thresholding" in inspect.signature(scheduler_class.__init__).parameters
    ):
        # DDPM / DDIM clip the predicted x_0 to [-clip_sample_range, clip_sample_range] (the training
        # scheduler's setting); multistep solvers ignore clip_sample, their equivalent is thresholding
        # with sample_max_value = clip_sample_range (s = 1 then: plain clipping).
        extra.update(thresholding=True, sample_max_value=float(base_config.get("clip_sample_range", 1.0)))
    return scheduler_class.from_config(base_config, **extra), name


def _scheduler_mismatch_warning(name: str, base_config) -> str | None:
    trained_with_etsdm = _is_etsdm_config(base_config)
    if trained_with_etsdm and not name.startswith("etsdm-"):
        return (
            f"warning: this model was trained with E-TSDM (threshold {base_config['etsdm_threshold']}); "
            f"--scheduler {name} queries it at the real timesteps. Use an etsdm-* scheduler to sample it as trained."
        )
    if not trained_with_etsdm and name.startswith("etsdm-"):
        return f"warning: this model was trained without E-TSDM; --scheduler {name} shares early timesteps anyway."
    return None


def _load_pipeline(name_or_path: str, device: str | None):
    import torch

    from .pipelines import SMDPipeline

    if name_or_path.startswith(("/", ".", "~")) and not os.path.isdir(os.path.expanduser(name_or_path)):
        raise CLIError(f"pipeline {name_or_path!r}: no such folder")
    try:
        pipeline = SMDPipeline.from_pretrained(os.path.expanduser(name_or_path))
    except (OSError, ValueError) as error:
        raise CLIError(f"pipeline {name_or_path!r} could not be loaded: {error}") from error
    pipeline.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _sample_images(
    pipeline, scheduler_name: str, num_inference_steps: int, num_images: int, seed: int, batch_size: int
):
    """``num_images`` samples as a uint8 NHWC array, drawn in batches with one seeded generator per batch."""
    import numpy as np
    import torch

    base_config = pipeline.scheduler.config
    scheduler, resolved = make_scheduler(scheduler_name, base_config)
    warning = _scheduler_mismatch_warning(resolved, base_config)
    if warning:
        print(warning, file=sys.stderr)
    original = pipeline.scheduler
    pipeline.scheduler = scheduler
    try:
        chunks = []
        for start in range(0, num_images, batch_size):
            size = min(batch_size, num_images - start)
            generator = torch.Generator(device="cpu").manual_seed(seed + start)
            images = pipeline(
                batch_size=size,
                num_inference_steps=num_inference_steps,
                generator=generator,
                output_type="np",
            ).images
            chunks.append(np.asarray(images))
    finally:
        pipeline.scheduler = original
    array = np.concatenate(chunks)
    return np.clip(np.round(array * 255), 0, 255).astype(np.uint8), resolved


def _grid_png(array, path: str, upscale: int = 1) -> None:
    from diffusers.utils import make_image_grid
    from PIL import Image

    images = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in array]
    if upscale > 1:
        images = [
            im.resize((im.width * upscale, im.height * upscale), Image.Resampling.NEAREST) for im in images
        ]
    columns = int(math.ceil(math.sqrt(len(images))))
    rows = int(math.ceil(len(images) / columns))
    images += [Image.new(images[0].mode, images[0].size)] * (rows * columns - len(images))
    make_image_grid(images, rows=rows, cols=columns).save(path)


# ----------------------------------------------------------------------------- parsers


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_sampling_flags(parser: argparse.ArgumentParser, default_steps: int, default_images: int) -> None:
    parser.add_argument(
        "pipeline", help="A trained pipeline folder (from `diffusers-smd train`) or a Hub repo id."
    )
    parser.add_argument(
        "--scheduler",
        default=AUTO,
        choices=[AUTO, *SCHEDULER_CHOICES],
        help="Sampler. 'auto': DPM-Solver++, in its E-TSDM variant (etsdm-dpmsolver++) if the model was trained "
        "with E-TSDM. etsdm-* variants condition the network on the shared early timesteps. When the model's "
        "scheduler clips x_0 (clip_sample, the DDPM default), multistep solvers clip too (thresholding).",
    )
    parser.add_argument(
        "--num_inference_steps", type=_positive_int, default=default_steps, help="Denoising steps."
    )
    parser.add_argument(
        "--num_images", type=_positive_int, default=default_images, help="Number of images to generate."
    )
    parser.add_argument(
        "--batch_size", type=_positive_int, default=256, help="Images generated per forward batch."
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="Seed of the sampling noise (same seed, same images)."
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu).")


def _launcher_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=add_help)
    group = parser.add_argument_group("launcher (accelerate launch)")
    group.add_argument(
        "--config_file",
        default=None,
        help="An accelerate config file (see training/accelerate_configs/): multi-GPU, multi-node, FSDP. "
        "Default: accelerate's own default config, if any.",
    )
    group.add_argument(
        "--num_processes",
        type=_positive_int,
        default=None,
        help="Processes to launch (default 1 or the config's).",
    )
    group.add_argument(
        "--cpu",
        action="store_true",
        help="Train on CPU; with --num_processes > 1 the processes talk through gloo (DDP on CPU).",
    )
    group.add_argument(
        "--main_process_port",
        type=int,
        default=None,
        help="Port of the process group (default: a free port).",
    )
    group.add_argument("--dry_run", action="store_true", help="Print the accelerate launch command and exit.")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The ``diffusers-smd`` parser (subcommands train, sample, eval, publish, quickstart)."""
    from .training_config import build_parser as build_training_parser

    parser = argparse.ArgumentParser(
        prog="diffusers-smd",
        description="Soft Mixture Denoising and E-TSDM for diffusers: train, sample, evaluate, publish.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "train",
        help="Train or fine-tune with accelerate (flags of training/train_smd.py).",
        description="Run the SMD training script through `accelerate launch`. Launcher flags come first in this "
        "help; every other flag goes to the training script unchanged.",
        parents=[_launcher_parser(add_help=False), build_training_parser(add_help=False)],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sample = commands.add_parser(
        "sample",
        help="Generate a PNG grid from a trained pipeline.",
        description="Load a pipeline folder or Hub repo, sample with the chosen scheduler, write a PNG grid.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_sampling_flags(sample, default_steps=20, default_images=64)
    sample.add_argument(
        "--output",
        default=None,
        help="PNG file to write (default: samples-<scheduler>-<steps>steps.png in the current folder). "
        "An existing file is never replaced unless --overwrite is given.",
    )
    sample.add_argument("--overwrite", action="store_true", help="Allow replacing an existing --output file.")
    sample.add_argument(
        "--upscale",
        type=_positive_int,
        default=1,
        help="Enlarge each image by this factor (nearest neighbour).",
    )

    evaluate = commands.add_parser(
        "eval",
        help="Frechet digits distance + class histogram against the held-out digits.",
        description="Generate --num_images samples and compare them with the held-out digits: the Frechet distance "
        "in the feature space of the package's small digits classifier (a stand-in for FID at this scale), plus "
        "the classifier's predicted-class histogram. Results are added to eval_results.json in the pipeline folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_sampling_flags(evaluate, default_steps=20, default_images=500)
    evaluate.add_argument(
        "--results_file",
        default=None,
        help="Where to write the results (default: eval_results.json in the pipeline folder; required for a Hub repo).",
    )

    publish = commands.add_parser(
        "publish",
        help="Upload a trained pipeline folder to the Hugging Face Hub with a model card.",
        description="Upload a trained pipeline folder to the Hub (diffusers_smd.hub). Run `diffusers-smd publish --help` "
        "for its flags.",
        add_help=False,
    )
    publish.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    quick = commands.add_parser(
        "quickstart",
        help="The main job: train a small SMD + E-TSDM model on the built-in digits (CPU, minutes) and sample it.",
        description="Train a small SMD + E-TSDM model on the built-in digits on CPU, sample it with DPM-Solver++ "
        "(10 steps) and DDIM (50 steps), both in their E-TSDM variants, write the PNG grids, and evaluate them "
        "(Frechet digits distance). Never writes into a non-empty existing folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    quick.add_argument(
        "--output_dir",
        default=None,
        help=f"Where to put the model and grids (default: ./{QUICKSTART_DEFAULT_DIR}, or ./{QUICKSTART_DEFAULT_DIR}-2, "
        "-3, ... if that exists and is not empty). A given non-empty folder is refused.",
    )
    quick.add_argument(
        "--max_train_steps", type=_positive_int, default=QUICKSTART_STEPS, help="Training steps."
    )
    quick.add_argument("--seed", type=int, default=0, help="Seed of training and sampling.")
    quick.add_argument("--num_images", type=_positive_int, default=64, help="Images per grid.")
    quick.add_argument(
        "--eval_images", type=int, default=500, help="Samples for the Frechet digits distance (0: skip eval)."
    )
    return parser


# ----------------------------------------------------------------------------- commands


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(launch: argparse.Namespace, script_argv: Sequence[str]) -> tuple[list[str], dict]:
    """The ``accelerate launch`` command line (and environment) that runs the training module."""
    import torch

    command = [sys.executable, "-m", "accelerate.commands.launch"]
    env = dict(os.environ)
    if launch.config_file is not None:
        if not os.path.isfile(launch.config_file):
            raise CLIError(f"--config_file {launch.config_file!r}: no such file")
        command += ["--config_file", launch.config_file]
    else:
        command += ["--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no"]
    num_processes = launch.num_processes
    on_cpu = launch.cpu or not torch.cuda.is_available()
    if num_processes is not None:
        command += ["--num_processes", str(num_processes)]
        if num_processes > 1:
            # accelerate's --cpu launcher starts one process; several CPU processes are started by the
            # multi-process launcher (torchrun) and told to use CPU + gloo through ACCELERATE_USE_CPU.
            command += ["--multi_gpu"]
            if on_cpu:
                env["ACCELERATE_USE_CPU"] = "true"
            command += ["--main_process_port", str(launch.main_process_port or _free_port())]
        elif launch.cpu:
            command += ["--cpu"]
    elif launch.cpu:
        command += ["--cpu"]
    command += ["-m", "diffusers_smd.training", *script_argv]
    return command, env


def _train(argv: Sequence[str]) -> int:
    from .training_config import parse_args

    if any(flag in argv for flag in ("-h", "--help")):
        build_parser().parse_args(["train", "--help"])
    launch, script_argv = _launcher_parser().parse_known_args(argv)
    parse_args(script_argv)  # bad flags fail here, before any process starts
    command, env = launch_command(launch, script_argv)
    if launch.dry_run:
        print(" ".join(command))
        return 0
    return subprocess.call(command, env=env)


def _default_output(scheduler: str, steps: int) -> str:
    return f"samples-{scheduler}-{steps}steps.png"


def _sample(args: argparse.Namespace) -> int:
    pipeline = _load_pipeline(args.pipeline, args.device)
    array, resolved = _sample_images(
        pipeline, args.scheduler, args.num_inference_steps, args.num_images, args.seed, args.batch_size
    )
    output = args.output or _default_output(resolved, args.num_inference_steps)
    if os.path.exists(output) and not args.overwrite:
        raise CLIError(f"--output {output!r} exists; pass --overwrite to replace it or choose another file")
    _grid_png(array, output, args.upscale)
    print(
        f"wrote {len(array)} images ({resolved}, {args.num_inference_steps} steps) to {os.path.abspath(output)}"
    )
    return 0


def evaluate_pipeline(
    pipeline, scheduler: str, num_inference_steps: int, num_images: int, seed: int, batch_size: int
):
    """Sample ``num_images`` and score them against the held-out digits; return (results entries, resolved scheduler)."""
    import torch

    from .metrics import compute_digits_metrics

    array, resolved = _sample_images(pipeline, scheduler, num_inference_steps, num_images, seed, batch_size)
    generated = torch.from_numpy(array).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    metrics = compute_digits_metrics(generated, "heldout")
    entries = []
    for metric in ("frechet_digits_distance", "class_histogram"):
        value = metrics[metric]
        if hasattr(value, "tolist"):
            value = value.tolist()
        entries.append(
            {
                "metric": metric,
                "scheduler": resolved,
                "num_inference_steps": num_inference_steps,
                "value": value,
                "num_samples": num_images,
                "seed": seed,
                "reference": "digits-heldout",
            }
        )
    return entries, resolved


def update_eval_results(path: str, entries: list[dict]) -> list[dict]:
    """Merge ``entries`` into the JSON list at ``path``: an entry replaces one with the same metric, scheduler and steps."""
    existing = []
    if os.path.isfile(path):
        with open(path) as handle:
            existing = json.load(handle)
        if not isinstance(existing, list):
            raise CLIError(f"{path} does not hold a list of results; move it away first")

    def key(entry):
        return entry.get("metric"), entry.get("scheduler"), entry.get("num_inference_steps")

    new_keys = {key(e) for e in entries}
    merged = [e for e in existing if key(e) not in new_keys] + entries
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(merged, handle, indent=2)
        handle.write("\n")
    os.replace(temporary, path)
    return merged


def _eval(args: argparse.Namespace) -> int:
    results_file = args.results_file
    if results_file is None:
        if not os.path.isdir(os.path.expanduser(args.pipeline)):
            raise CLIError("--results_file is required when the pipeline is a Hub repo id")
        results_file = os.path.join(os.path.expanduser(args.pipeline), "eval_results.json")
    pipeline = _load_pipeline(args.pipeline, args.device)
    entries, resolved = evaluate_pipeline(
        pipeline, args.scheduler, args.num_inference_steps, args.num_images, args.seed, args.batch_size
    )
    update_eval_results(results_file, entries)
    fdd = entries[0]["value"]
    histogram = ", ".join(f"{v:.2f}" for v in entries[1]["value"])
    print(
        f"Frechet digits distance ({resolved}, {args.num_inference_steps} steps, {args.num_images} samples): {fdd:.3f}"
    )
    print(f"predicted-class histogram (digits 0-9): {histogram}")
    print(f"results added to {os.path.abspath(results_file)}")
    return 0


def _publish(argv: Sequence[str]) -> int:
    try:
        from .hub import publish_main
    except ImportError as error:
        raise CLIError(f"`diffusers-smd publish` is not available in this installation ({error})") from error
    result = publish_main(list(argv))
    return int(result or 0)


# ----------------------------------------------------------------------------- quickstart

#: Quickstart recipe (measured on 2 CPU cores; see "Quickstart: the main job" in README.md).
QUICKSTART_STEPS = 1500
QUICKSTART_TRAINING_FLAGS = (
    "--objective", "smd",
    "--etsdm",
    "--prediction_type", "v_prediction",
    "--ddpm_beta_schedule", "squaredcos_cap_v2",
    "--resolution", "16",
    "--block_out_channels", "16,32,64",
    "--layers_per_block", "1",
    "--smd_latent_dim", "16",
    "--train_batch_size", "32",
    "--learning_rate", "1e-3",
    "--lr_scheduler", "cosine",
    "--lr_warmup_steps", "100",
    "--use_ema",
    "--ema_max_decay", "0.999",
    "--ddpm_num_steps", "1000",
    "--ddpm_num_inference_steps", "50",
    "--eval_batch_size", "16",
    "--checkpointing_steps", "500",
    "--checkpoints_total_limit", "1",
    "--save_images_epochs", "1000000",
    "--save_model_epochs", "1000000",
)  # fmt: skip


def pick_output_dir(requested: str | None, default: str = QUICKSTART_DEFAULT_DIR) -> str:
    """A folder that is missing or empty: ``requested`` (refused if not empty) or the first free ``default[-N]``."""

    def is_free(path: str) -> bool:
        return not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path))

    if requested is not None:
        if not is_free(requested):
            raise CLIError(
                f"--output_dir {requested!r} exists and is not empty; quickstart never writes over earlier results. "
                f"Choose another folder or remove it."
            )
        return requested
    candidate, index = default, 1
    while not is_free(candidate):
        index += 1
        candidate = f"{default}-{index}"
    return candidate


def _quickstart(args: argparse.Namespace) -> int:
    from .training import main as train_main
    from .training_config import parse_args

    output_dir = pick_output_dir(args.output_dir)
    started = time.time()
    print(
        f"Training a small SMD + E-TSDM model on the built-in digits into {os.path.abspath(output_dir)} ..."
    )
    training_argv = [
        *QUICKSTART_TRAINING_FLAGS,
        "--output_dir",
        output_dir,
        "--max_train_steps",
        str(args.max_train_steps),
        "--seed",
        str(args.seed),
    ]
    train_main(parse_args(training_argv))
    trained = time.time()

    pipeline = _load_pipeline(output_dir, "cpu")
    grids = {}
    for scheduler, steps in (("etsdm-dpmsolver++", 10), ("etsdm-ddim", 50)):
        array, resolved = _sample_images(
            pipeline, scheduler, steps, args.num_images, args.seed, batch_size=256
        )
        path = os.path.join(output_dir, f"grid_{resolved}_{steps}steps.png")
        _grid_png(array, path, upscale=4)
        grids[(resolved, steps)] = path
    sampled = time.time()
    fdd = None
    if args.eval_images > 0:
        entries, _ = evaluate_pipeline(
            pipeline, "etsdm-dpmsolver++", 10, args.eval_images, args.seed, batch_size=250
        )
        update_eval_results(os.path.join(output_dir, "eval_results.json"), entries)
        fdd = entries[0]["value"]
    finished = time.time()
    timing = {
        "train_seconds": round(trained - started, 1),
        "sample_seconds": round(sampled - trained, 1),
        "eval_seconds": round(finished - sampled, 1),
        "total_seconds": round(finished - started, 1),
    }
    with open(os.path.join(output_dir, "quickstart_timing.json"), "w") as handle:
        json.dump(timing, handle, indent=2)
        handle.write("\n")
    print(f"\nDone in {timing['total_seconds']:.0f} s (training {timing['train_seconds']:.0f} s).")
    print(f"Model (an SMDPipeline): {os.path.abspath(output_dir)}")
    for (scheduler, steps), path in grids.items():
        print(f"Grid, {scheduler} with {steps} steps: {os.path.abspath(path)}")
    if fdd is not None:
        print(f"Frechet digits distance (etsdm-dpmsolver++, 10 steps, {args.eval_images} samples): {fdd:.3f}")
    return 0


# ----------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffusers-smd`` console script."""
    from .training import NonFiniteLossError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "train":
            return _train(argv[1:])
        if argv and argv[0] == "publish":
            return _publish(argv[1:])
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        handler = {"sample": _sample, "eval": _eval, "quickstart": _quickstart}[args.command]
        return handler(args)
    except (CLIError, ValueError) as error:
        print(f"diffusers-smd: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"diffusers-smd: training stopped: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
