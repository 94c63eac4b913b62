"""``diffusers-smd lipschitz``: measure K(t), the Lipschitz constant in t of a saved model, to JSON (and a PNG)."""

from __future__ import annotations

import argparse
import os

from .common import CLIError, check_new_file, positive_int, resolve_device


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "lipschitz",
        help="Measure K(t) = E||eps(x_t, t) - eps(x_t, t + dt)|| / dt of a saved model (JSON, optional PNG).",
        description="Estimate how fast a saved model's noise prediction changes with t near the data (the E-TSDM "
        "paper's Lipschitz constant in t): x_t is built from --data at the real t with fixed noise, the network is "
        "queried at t and t + dt (at E-TSDM's shared f(t) when the model was trained with E-TSDM; with one fixed "
        "mixture noise for SMD models), v / x0 predictions are converted to epsilon, and the mean norm of the "
        "difference over --num_samples examples, divided by dt, is K(t).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "pipeline", help="A saved pipeline folder (from `diffusers-smd train`) or a Hub repo id."
    )
    parser.add_argument(
        "--data",
        default="digits",
        help="Clean samples x_0: 'digits' (built-in), a Hub / local data set name, an image folder, or a .npy / "
        ".safetensors file with one array (N, *sample shape) in the model's data range.",
    )
    parser.add_argument("--num_samples", type=positive_int, default=64, help="Clean samples averaged over.")
    parser.add_argument("--t_min", type=_non_negative_int, default=0, help="First timestep t.")
    parser.add_argument(
        "--t_max", type=_non_negative_int, default=200, help="Last timestep t (t_max + dt < T)."
    )
    parser.add_argument("--dt", type=positive_int, default=1, help="Timestep difference (integer timesteps).")
    parser.add_argument("--t_stride", type=positive_int, default=1, help="Measure every t_stride-th t.")
    parser.add_argument(
        "--seed", type=int, default=0, help="Seed of the noise eps (and SMD's mixture noise)."
    )
    parser.add_argument("--batch_size", type=positive_int, default=256, help="Examples per forward batch.")
    parser.add_argument(
        "--output", required=True, help="JSON file to write (the K(t) curve and its settings)."
    )
    parser.add_argument("--plot", default=None, help="Also write a PNG plot of K(t) (log scale) here.")
    parser.add_argument("--overwrite", action="store_true", help="Allow replacing existing output files.")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu).")
    parser.set_defaults(run=run)


def load_any_pipeline(name_or_path: str, device: str):
    """A saved pipeline of any class this package writes (image or vector), on ``device``."""
    from .common import load_pipeline

    path = os.path.expanduser(name_or_path)
    model_index = os.path.join(path, "model_index.json")
    if os.path.isfile(model_index):
        from ..atomic import read_json

        if read_json(model_index).get("_class_name") == "SMDVectorPipeline":
            from ..pipelines import SMDVectorPipeline

            pipeline = SMDVectorPipeline.from_pretrained(path).to(device)
            pipeline.set_progress_bar_config(disable=True)
            return pipeline
    return load_pipeline(name_or_path, device)


def run(args: argparse.Namespace) -> int:
    from ..lipschitz import load_clean_samples, measure_lipschitz, model_sample_shape

    check_new_file(args.output, "--output", overwrite=args.overwrite)
    if args.plot is not None:
        check_new_file(args.plot, "--plot", overwrite=args.overwrite)
        if not args.plot.lower().endswith(".png"):
            raise CLIError(f"--plot {args.plot!r} must be a .png file")
    if args.t_min > args.t_max:
        raise CLIError(f"--t_min {args.t_min} must not exceed --t_max {args.t_max}")
    device = resolve_device(args.device)
    pipeline = load_any_pipeline(args.pipeline, device)
    num_train_timesteps = int(pipeline.scheduler.config["num_train_timesteps"])
    if args.t_max + args.dt > num_train_timesteps - 1:
        raise CLIError(
            f"--t_max {args.t_max} + --dt {args.dt} must be at most {num_train_timesteps - 1} (this model has "
            f"{num_train_timesteps} training timesteps)"
        )
    clean = load_clean_samples(args.data, model_sample_shape(pipeline), num_samples=args.num_samples)
    result = measure_lipschitz(
        pipeline,
        clean,
        t_min=args.t_min,
        t_max=args.t_max,
        dt=args.dt,
        t_stride=args.t_stride,
        seed=args.seed,
        batch_size=args.batch_size,
        model_name=args.pipeline,
        data_name=args.data,
    )
    result.save(args.output)
    if args.plot is not None:
        result.plot(args.plot, label=os.path.basename(os.path.normpath(args.pipeline)))
    peak_t, peak = result.peak()
    print(
        f"K(t), t = {result.timesteps[0]}..{result.timesteps[-1]}, dt = {result.dt}, {result.num_samples} samples"
        + (f", E-TSDM f(t) (threshold {result.etsdm['threshold']})" if result.etsdm else "")
    )
    split = (
        result.etsdm["threshold"]
        if result.etsdm
        else max(result.timesteps[0] + 1, min(100, result.timesteps[-1]))
    )
    print(
        f"mean K for t < {split}: {result.mean(t_max=split):.4g}; for t >= {split}: {result.mean(t_min=split):.4g}"
    )
    print(f"largest K: {peak:.4g} at t = {peak_t}")
    print(
        f"written: {os.path.abspath(args.output)}" + (f", {os.path.abspath(args.plot)}" if args.plot else "")
    )
    return 0
