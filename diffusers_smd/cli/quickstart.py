"""``diffusers-smd quickstart``: the main job. Train a small SMD + E-TSDM model on the built-in digits on CPU,
sample it with DPM-Solver++ (10 steps) and DDIM (50 steps), write the grids, and score them."""

from __future__ import annotations

import argparse
import math
import os
import time

from ..atomic import write_json
from .common import CLIError, positive_int

QUICKSTART_DEFAULT_DIR = "smd-quickstart"
QUICKSTART_STEPS = 2700
#: The quickstart recipe, as training settings (field names of UnconditionalTrainingConfig). The digits are
#: 8x8 images: trained at that native size a step costs about 1/1.8 of a 16x16 step, so 2700 steps take the time
#: 1500 took at 16x16, and reach a lower Frechet digits distance (docs/quickstart.md, docs/training/quickstart_comparison.json).
QUICKSTART_SETTINGS = dict(
    objective="smd",
    etsdm=True,
    prediction_type="v_prediction",
    ddpm_beta_schedule="squaredcos_cap_v2",
    resolution=8,
    block_out_channels=(16, 32, 64),
    layers_per_block=1,
    smd_latent_dim=16,
    train_batch_size=32,
    learning_rate=1e-3,
    lr_scheduler="cosine",
    lr_warmup_steps=100,
    use_ema=True,
    ema_max_decay=0.999,
    ddpm_num_steps=1000,
    ddpm_num_inference_steps=50,
    eval_batch_size=16,
    checkpointing_steps=900,
    checkpoints_total_limit=1,
    save_images_epochs=1_000_000,
    save_model_epochs=1_000_000,
)
#: (sampler, steps, caption) of the grids; the first one is also scored. Both start from the same seed, so cell i
#: of one grid and cell i of the other come from the same initial noise.
QUICKSTART_SAMPLERS = (
    ("dpmsolver++", 10, "the fast sampler: DPM-Solver++ turns noise into digits in 10 steps"),
    (
        "ddim",
        50,
        "the same starting noise with DDIM in 50 steps: each cell matches the same cell of the 10-step grid",
    ),
)
#: Side, in pixels, at which each sample is drawn in the grids (nearest-neighbour upscaling, crisp pixels).
QUICKSTART_GRID_PIXELS = 64
#: Pixels of mid grey between the samples of a grid.
QUICKSTART_GRID_GAP = 4


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "quickstart",
        help="The main job: train a small SMD + E-TSDM model on the built-in digits (CPU, minutes) and sample it.",
        description="Train a small SMD + E-TSDM model on the built-in digits on CPU, sample it with DPM-Solver++ "
        "(10 steps) and DDIM (50 steps), both in their E-TSDM variants, write the PNG grids, and evaluate them "
        "(Frechet digits distance). Never writes into a non-empty existing folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--output_dir",
        default=None,
        help=f"Where to put the model and grids (default: ./{QUICKSTART_DEFAULT_DIR}, or ./{QUICKSTART_DEFAULT_DIR}-2, "
        "-3, ... if that exists and is not empty). A given non-empty folder is refused.",
    )
    parser.add_argument(
        "--max_train_steps", type=positive_int, default=QUICKSTART_STEPS, help="Training steps."
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of training and sampling.")
    parser.add_argument("--num_images", type=positive_int, default=64, help="Images per grid.")
    parser.add_argument(
        "--eval_images",
        type=int,
        default=500,
        help="Samples for the Frechet digits distance (0: skip eval; otherwise at least 2).",
    )
    parser.set_defaults(run=run)


def pick_output_dir(requested: str | None, default: str = QUICKSTART_DEFAULT_DIR) -> str:
    """A folder that is missing or empty: ``requested`` (refused if not empty) or the first free ``default[-N]``."""

    def is_free(path: str) -> bool:
        return not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path))

    if requested is not None:
        if not is_free(requested):
            raise CLIError(
                f"--output_dir {requested!r} exists and is not empty; quickstart never writes over earlier results. "
                "Choose another folder or remove it."
            )
        return requested
    candidate, index = default, 1
    while not is_free(candidate):
        index += 1
        candidate = f"{default}-{index}"
    return candidate


def run(args: argparse.Namespace) -> int:
    from ..sampling import generate, make_scheduler, save_grid
    from ..training import UnconditionalTrainingConfig, train
    from .common import load_pipeline
    from .evaluate import evaluate_pipeline, update_eval_results

    if args.eval_images == 1 or args.eval_images < 0:
        raise CLIError(
            f"--eval_images must be 0 (skip) or at least 2 (a covariance needs two), got {args.eval_images}"
        )
    output_dir = pick_output_dir(args.output_dir)
    config = UnconditionalTrainingConfig(
        **QUICKSTART_SETTINGS, output_dir=output_dir, max_train_steps=args.max_train_steps, seed=args.seed
    )
    started = time.time()
    print(
        f"Training a small SMD + E-TSDM model on the built-in digits into {os.path.abspath(output_dir)} ..."
    )
    train(config)
    trained = time.time()

    pipeline = load_pipeline(output_dir, "cpu")
    resolution = config.resolution
    upscale = max(1, QUICKSTART_GRID_PIXELS // resolution)
    grids = []
    for sampler, steps, caption in QUICKSTART_SAMPLERS:
        scheduler, resolved = make_scheduler(sampler, pipeline.scheduler.config)
        images = generate(
            pipeline, args.num_images, steps, seed=args.seed, scheduler=scheduler, description=resolved
        )
        path = os.path.join(output_dir, f"grid_{resolved}_{steps}steps.png")
        save_grid(images, path, upscale=upscale, gap=QUICKSTART_GRID_GAP)
        grids.append((resolved, steps, caption, path))
    sampled = time.time()
    scored = None
    if args.eval_images > 0:
        sampler, steps, _ = QUICKSTART_SAMPLERS[0]
        entries, _ = evaluate_pipeline(pipeline, sampler, steps, args.eval_images, args.seed, batch_size=250)
        update_eval_results(os.path.join(output_dir, "eval_results.json"), entries)
        scored = entries[0]
    finished = time.time()
    timing = {
        "train_seconds": round(trained - started, 1),
        "sample_seconds": round(sampled - trained, 1),
        "eval_seconds": round(finished - sampled, 1),
        "total_seconds": round(finished - started, 1),
    }
    write_json(os.path.join(output_dir, "quickstart_timing.json"), timing, sort_keys=False)
    print(f"\nDone in {timing['total_seconds']:.0f} s (training {timing['train_seconds']:.0f} s).")
    print(f"Model (an SMDPipeline): {os.path.abspath(output_dir)}")
    columns = math.ceil(math.sqrt(args.num_images))
    for scheduler, steps, caption, path in grids:
        print(f"Grid, {scheduler} with {steps} steps: {os.path.abspath(path)}")
        print(
            f"  {args.num_images} new digits ({columns} per row, each {resolution}x{resolution} sample drawn "
            f"{upscale}x, grey gaps between samples); {caption}."
        )
    if scored is not None:
        print(
            f"Frechet digits distance ({scored['scheduler']}, {scored['num_inference_steps']} steps, "
            f"{scored['num_samples']} samples vs the {scored['num_reference']} held-out digits): "
            f"{scored['value']:.1f}; lower is better: real digits score about 33, noise about 1700."
        )
    return 0
