"""Command-line flags of the SMD training script, and the checks that run before any work.

The flags follow diffusers' ``examples/unconditional_image_generation/train_unconditional.py``
(same names, same meanings) and add the SMD / E-TSDM ones. ``diffusers-smd train --help`` and
``accelerate launch training/train_smd.py --help`` print the same text.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

__all__ = ["OBJECTIVES", "build_parser", "check_args", "parse_args", "args_to_json_dict", "SECRET_ARGS"]

OBJECTIVES = ("vanilla", "smd", "smd-mixture")
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
#: Flags never written to training_args.json nor logged (there are none today; tokens come from `hf auth login`).
SECRET_ARGS = ("hub_token",)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser(prog: str | None = None, add_help: bool = True) -> argparse.ArgumentParser:
    """The argument parser of the training script (every flag documented in its help)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        add_help=add_help,
        description=(
            "Train or fine-tune an unconditional SMD / E-TSDM diffusion model with accelerate. "
            "Flags follow diffusers' train_unconditional.py. With no data flags it trains on the "
            "built-in digits, so `--output_dir DIR` alone is a complete command."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_name",
        type=str,
        default=None,
        help="A Hub data set name (e.g. huggan/flowers-102-categories), a local data set folder, or 'digits' "
        "for the built-in scikit-learn digits. Default: 'digits' unless --train_data_dir is given.",
    )
    data.add_argument(
        "--dataset_config_name",
        type=str,
        default=None,
        help="The config of the Hub data set, if it has several.",
    )
    data.add_argument(
        "--train_data_dir",
        type=str,
        default=None,
        help="A folder of images (read with datasets' 'imagefolder'). Grey, RGB, RGBA (composited on white) and "
        "mixed sizes are accepted.",
    )
    data.add_argument(
        "--image_column",
        type=str,
        default=None,
        help="The data set column holding images (default: detected).",
    )
    data.add_argument(
        "--cache_dir", type=str, default=None, help="Where downloaded data sets and models are cached."
    )
    data.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="Training image size in pixels (square). Must be divisible by the UNet's downsampling factor. "
        "Default: the pretrained / configured model's sample_size, else 16.",
    )
    data.add_argument(
        "--num_channels",
        type=int,
        default=None,
        choices=(1, 3),
        help="Image channels (1 grey, 3 RGB). Default: the model's in_channels, else 1 for grey data, else 3.",
    )
    data.add_argument(
        "--center_crop", action="store_true", help="Crop the centre square (default: a random square)."
    )
    data.add_argument(
        "--random_flip", action="store_true", help="Flip training images left-right with probability 1/2."
    )
    data.add_argument(
        "--dataloader_num_workers",
        type=int,
        default=0,
        help="Data loading worker processes (0: main process).",
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--pretrained_model_name_or_path",
        type=str,
        default=None,
        help="Fine-tune from a diffusers UNet2DModel folder, a pipeline folder (with unet/ and scheduler/) or a Hub "
        "repo id. With --objective smd/smd-mixture the UNet is wrapped with zero-initialised SMD modules, so step 0 "
        "reproduces the pretrained model. A pipeline's noise schedule replaces the --ddpm_* flags.",
    )
    model.add_argument(
        "--revision", type=str, default=None, help="Revision of the pretrained model on the Hub."
    )
    model.add_argument(
        "--model_config_name_or_path",
        type=str,
        default=None,
        help="A UNet2DModel config (folder or config.json) to train from scratch; default: a small UNet sized by "
        "--block_out_channels and --layers_per_block.",
    )
    model.add_argument(
        "--block_out_channels",
        type=_int_list,
        default=(32, 64, 128),
        help="Channel widths of the default from-scratch UNet, one per resolution stage (comma-separated).",
    )
    model.add_argument(
        "--layers_per_block", type=int, default=2, help="ResNet layers per stage of the default UNet."
    )

    smd = parser.add_argument_group("SMD and E-TSDM")
    smd.add_argument(
        "--objective",
        type=str,
        default="smd",
        choices=OBJECTIVES,
        help="Training objective: 'vanilla' (plain diffusers loss on a plain UNet2DModel), 'smd' (the SMD paper's "
        "objective: one mixture noise per example), 'smd-mixture' (the K-sample mixture likelihood).",
    )
    smd.add_argument(
        "--smd_latent_dim", type=int, default=32, help="Channels of the SMD latent z (the paper uses 100)."
    )
    smd.add_argument(
        "--smd_hypernet_layers", type=int, default=2, help="Layers K of the SMD hypernetwork f_phi."
    )
    smd.add_argument(
        "--smd_identifier_channels",
        type=_int_list,
        default=None,
        help="Stage widths of the SMD identifier g_xi (comma-separated); default: about 1/4 of the UNet's first two.",
    )
    smd.add_argument(
        "--smd_mixture_samples", type=int, default=4, help="Mixture samples K of --objective smd-mixture."
    )
    smd.add_argument(
        "--etsdm",
        action="store_true",
        help="Early timestep sharing (E-TSDM): condition the network on a shared timestep below --etsdm_threshold.",
    )
    smd.add_argument(
        "--etsdm_threshold",
        type=int,
        default=None,
        help="E-TSDM threshold t~ in training steps (default: num_train_timesteps // 10).",
    )
    smd.add_argument(
        "--etsdm_intervals", type=int, default=5, help="E-TSDM: equal sub-intervals n of [0, t~)."
    )
    smd.add_argument(
        "--snr_gamma",
        type=float,
        default=None,
        help="Min-SNR loss weighting gamma (e.g. 5.0); default: no weighting. Not used by smd-mixture.",
    )

    noise = parser.add_argument_group("noise schedule")
    noise.add_argument(
        "--prediction_type",
        type=str,
        default="epsilon",
        choices=("epsilon", "sample", "v_prediction"),
        help="What the network predicts: the noise, the clean image, or v.",
    )
    noise.add_argument("--ddpm_num_steps", type=int, default=1000, help="Training diffusion steps T.")
    noise.add_argument(
        "--ddpm_num_inference_steps",
        type=int,
        default=None,
        help="DDPM steps when sampling the grids during and after training (default: every training "
        "timestep of the model, i.e. --ddpm_num_steps; at most that many).",
    )
    noise.add_argument(
        "--ddpm_beta_schedule",
        type=str,
        default="linear",
        choices=("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"),
        help="Beta schedule of the DDPM noise scheduler.",
    )

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--train_batch_size", type=int, default=16, help="Batch size per device.")
    optim.add_argument(
        "--num_epochs", type=int, default=100, help="Epochs (ignored when --max_train_steps is set)."
    )
    optim.add_argument(
        "--max_train_steps", type=int, default=None, help="Total optimisation steps; overrides --num_epochs."
    )
    optim.add_argument(
        "--gradient_accumulation_steps",
        type=int,
        default=1,
        help="Batches accumulated before each optimisation step.",
    )
    optim.add_argument(
        "--learning_rate", type=float, default=1e-4, help="Initial learning rate (after warmup)."
    )
    optim.add_argument(
        "--lr_scheduler", type=str, default="cosine", choices=LR_SCHEDULERS, help="Learning rate schedule."
    )
    optim.add_argument(
        "--lr_warmup_steps", type=int, default=500, help="Warmup steps of the learning rate schedule."
    )
    optim.add_argument("--adam_beta1", type=float, default=0.95, help="AdamW beta1.")
    optim.add_argument("--adam_beta2", type=float, default=0.999, help="AdamW beta2.")
    optim.add_argument("--adam_weight_decay", type=float, default=1e-6, help="AdamW weight decay.")
    optim.add_argument("--adam_epsilon", type=float, default=1e-08, help="AdamW epsilon.")
    optim.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping norm.")
    optim.add_argument(
        "--use_ema",
        action="store_true",
        help="Keep an exponential moving average of the weights (saved as the final model).",
    )
    optim.add_argument(
        "--ema_inv_gamma", type=float, default=1.0, help="EMA warmup inverse multiplicative factor."
    )
    optim.add_argument("--ema_power", type=float, default=3 / 4, help="EMA warmup power.")
    optim.add_argument("--ema_max_decay", type=float, default=0.9999, help="Maximum EMA decay.")
    optim.add_argument(
        "--mixed_precision",
        type=str,
        default=None,
        choices=("no", "fp16", "bf16"),
        help="Mixed precision (default: the accelerate config's choice).",
    )
    optim.add_argument(
        "--seed", type=int, default=None, help="Seed for a reproducible run (model init, noise, data order)."
    )

    out = parser.add_argument_group("output, checkpoints, logging")
    out.add_argument(
        "--output_dir", type=str, default="smd-model", help="Where the pipeline, checkpoints and logs go."
    )
    out.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Allow training into an --output_dir that already holds a model or checkpoints (without resuming).",
    )
    out.add_argument("--eval_batch_size", type=int, default=16, help="Images per sample grid.")
    out.add_argument("--save_images_epochs", type=int, default=10, help="Sample a grid every N epochs.")
    out.add_argument("--save_images_steps", type=int, default=None, help="Also sample a grid every N steps.")
    out.add_argument(
        "--save_model_epochs", type=int, default=10, help="Save the pipeline to --output_dir every N epochs."
    )
    out.add_argument(
        "--checkpointing_steps",
        type=int,
        default=500,
        help="Save a resumable checkpoint-<step> every N steps.",
    )
    out.add_argument(
        "--checkpoints_total_limit", type=int, default=None, help="Keep at most this many checkpoints."
    )
    out.add_argument(
        "--resume_from_checkpoint",
        type=str,
        default=None,
        help="Resume from a checkpoint folder, or 'latest' for the newest complete one in --output_dir "
        "(starts fresh when there is none).",
    )
    out.add_argument(
        "--logger",
        type=str,
        default="tensorboard",
        choices=("tensorboard", "wandb"),
        help="Where loss, learning rate and sample grids are logged.",
    )
    out.add_argument(
        "--logging_dir", type=str, default="logs", help="TensorBoard log folder, relative to --output_dir."
    )
    out.add_argument(
        "--push_to_hub",
        action="store_true",
        help="Publish the final pipeline to the Hub (diffusers_smd.hub).",
    )
    out.add_argument(
        "--hub_model_id",
        type=str,
        default=None,
        help="Hub repo id 'namespace/name' for --push_to_hub (checked before training starts).",
    )
    out.add_argument("--hub_private_repo", action="store_true", help="Create the Hub repo as private.")
    out.add_argument(
        "--local_rank", type=int, default=-1, help="Set by distributed launchers; do not pass by hand."
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the flags and run :func:`check_args` (ValueError naming the flag on bad input)."""
    args = build_parser().parse_args(argv)
    env_local_rank = int(os.environ.get("LOCAL_RANK", -1))
    if env_local_rank != -1 and env_local_rank != args.local_rank:
        args.local_rank = env_local_rank
    check_args(args)
    return args


def _positive(args, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be at least 1, got {value}")


def check_args(args: argparse.Namespace) -> None:
    """Checks that need no model and no data: values in range, flags that go together."""
    if args.dataset_name is not None and args.train_data_dir is not None:
        raise ValueError("give either --dataset_name or --train_data_dir, not both")
    if args.train_data_dir is not None and not os.path.isdir(args.train_data_dir):
        raise ValueError(f"--train_data_dir {args.train_data_dir!r} is not an existing folder")
    if args.pretrained_model_name_or_path is not None and args.model_config_name_or_path is not None:
        raise ValueError(
            "give either --pretrained_model_name_or_path or --model_config_name_or_path, not both"
        )
    _positive(
        args,
        "resolution",
        "train_batch_size",
        "eval_batch_size",
        "num_epochs",
        "gradient_accumulation_steps",
        "checkpointing_steps",
        "checkpoints_total_limit",
        "save_images_epochs",
        "save_images_steps",
        "save_model_epochs",
        "ddpm_num_steps",
        "ddpm_num_inference_steps",
        "layers_per_block",
        "smd_latent_dim",
        "smd_hypernet_layers",
        "smd_mixture_samples",
        "etsdm_intervals",
    )
    if args.max_train_steps is not None and args.max_train_steps < 0:
        raise ValueError(f"--max_train_steps must be >= 0, got {args.max_train_steps}")
    if args.learning_rate <= 0:
        raise ValueError(f"--learning_rate must be positive, got {args.learning_rate}")
    if args.lr_warmup_steps < 0:
        raise ValueError(f"--lr_warmup_steps must be >= 0, got {args.lr_warmup_steps}")
    if args.snr_gamma is not None and args.snr_gamma <= 0:
        raise ValueError(f"--snr_gamma must be positive, got {args.snr_gamma}")
    if args.snr_gamma is not None and args.objective == "smd-mixture":
        raise ValueError("--snr_gamma applies to --objective vanilla and smd, not smd-mixture")
    if args.etsdm_threshold is not None:
        if not args.etsdm:
            raise ValueError("--etsdm_threshold needs --etsdm")
        if not 1 <= args.etsdm_threshold <= args.ddpm_num_steps:
            raise ValueError(
                f"--etsdm_threshold must be in [1, --ddpm_num_steps={args.ddpm_num_steps}], got {args.etsdm_threshold}"
            )
    if args.dataloader_num_workers < 0:
        raise ValueError(f"--dataloader_num_workers must be >= 0, got {args.dataloader_num_workers}")
    if not 0 < args.ema_max_decay <= 1:
        raise ValueError(f"--ema_max_decay must be in (0, 1], got {args.ema_max_decay}")


def args_to_json_dict(args: argparse.Namespace) -> dict:
    """All flags as JSON-safe values, without secrets (for training_args.json and the trackers)."""
    result = {}
    for key, value in sorted(vars(args).items()):
        if key in SECRET_ARGS or "token" in key:
            continue
        if isinstance(value, tuple):
            value = list(value)
        try:
            json.dumps(value)
        except TypeError:
            value = str(value)
        result[key] = value
    return result
