"""The ``diffusers-smd`` command: one module per subcommand, each a small parser plus a call into the library.

* ``train`` (:mod:`.train`): the training engine through ``accelerate launch``;
* ``train-text-to-image`` (:mod:`.train_text_to_image`): Stable Diffusion / SDXL fine-tuning, the same way;
* ``sample`` (:mod:`.sample`): a PNG grid from a trained pipeline;
* ``eval`` (:mod:`.evaluate`): the Frechet digits distance and class histogram;
* ``publish`` (:mod:`.publish`): upload to the Hub with a model card;
* ``quickstart`` (:mod:`.quickstart`): the README's main job.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import evaluate, lipschitz, publish, quickstart, sample, train, train_text_to_image
from .common import CLIError

__all__ = ["CLIError", "build_parser", "main"]

SUBCOMMANDS = (train, train_text_to_image, sample, evaluate, lipschitz, publish, quickstart)


def build_parser() -> argparse.ArgumentParser:
    """The ``diffusers-smd`` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="diffusers-smd",
        description="Soft Mixture Denoising and E-TSDM for diffusers: train, sample, evaluate, publish.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffusers-smd`` console script; returns the exit status."""
    from ..sampling import NonFiniteSamplesError
    from ..training import NonFiniteLossError

    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except NonFiniteLossError as error:
        print(f"diffusers-smd: training stopped: {error}", file=sys.stderr)
        return 1
    except (CLIError, ValueError, FileExistsError, NonFiniteSamplesError) as error:
        print(f"diffusers-smd {args.command}: error: {error}", file=sys.stderr)
        return 2
