"""``diffusers-smd sample``: load a trained pipeline, sample it with a named scheduler, write a PNG grid."""

from __future__ import annotations

import argparse
import os

from .common import add_sampling_flags, check_new_file, load_pipeline, positive_int, resolve_device


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "sample",
        help="Generate a PNG grid from a trained pipeline.",
        description="Load a pipeline folder or Hub repo, sample with the chosen scheduler, write a PNG grid.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_sampling_flags(parser, default_steps=20, default_images=64)
    parser.add_argument(
        "--output",
        default=None,
        help="PNG file to write (default: samples-<scheduler>-<steps>steps.png in the current folder). "
        "An existing file is never replaced unless --overwrite is given.",
    )
    parser.add_argument("--overwrite", action="store_true", help="Allow replacing an existing --output file.")
    parser.add_argument(
        "--upscale",
        type=positive_int,
        default=1,
        help="Enlarge each image by this factor (nearest neighbour).",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..sampling import generate, make_scheduler, save_grid

    device = resolve_device(args.device)
    pipeline = load_pipeline(args.pipeline, device)
    scheduler, resolved = make_scheduler(args.scheduler, pipeline.scheduler.config)
    output = args.output or f"samples-{resolved}-{args.num_inference_steps}steps.png"
    check_new_file(output, "--output", args.overwrite)
    images = generate(
        pipeline,
        args.num_images,
        args.num_inference_steps,
        seed=args.seed,
        batch_size=args.batch_size,
        scheduler=scheduler,
        description=f"--scheduler {resolved}",
    )
    save_grid(images, output, upscale=args.upscale)
    print(
        f"wrote {len(images)} images ({resolved}, {args.num_inference_steps} steps) to {os.path.abspath(output)}"
    )
    return 0
