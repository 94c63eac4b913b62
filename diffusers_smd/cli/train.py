"""``diffusers-smd train``: check every setting here, then run the training engine through ``accelerate launch``.

The flags are the training configuration's (:class:`~diffusers_smd.training.UnconditionalTrainingConfig`)
plus the launcher's (``--config_file``, ``--num_processes``, ``--cpu``, ...). The configuration is validated
in this process, before any training process starts; a training process reports a user error as one line,
and the launcher's own traceback about the failed child is not shown.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
from collections.abc import Sequence

from .common import CLIError, positive_int

TRAINING_MODULE = "diffusers_smd.training"


def _add_launcher_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("launcher (accelerate launch)")
    group.add_argument(
        "--config_file",
        default=None,
        help="An accelerate config file (see training/accelerate_configs/): multi-GPU, multi-node, FSDP. "
        "Default: accelerate's own default config, if any.",
    )
    group.add_argument(
        "--num_processes",
        type=positive_int,
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


def add_training_parser(
    commands, name: str, help: str, description: str, config_class: type, run
) -> argparse.ArgumentParser:
    """A training subcommand: the launcher's flags, then one flag per field of ``config_class``."""
    from ..training.arguments import add_config_arguments

    parser = commands.add_parser(
        name, help=help, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    _add_launcher_flags(parser)
    add_config_arguments(parser, config_class)
    parser.set_defaults(run=run)
    return parser


def add_parser(commands) -> None:
    from ..training import UnconditionalTrainingConfig

    add_training_parser(
        commands,
        "train",
        help="Train or fine-tune with accelerate (flags of training/train_smd.py).",
        description="Run the SMD training engine through `accelerate launch`. Launcher flags come first in this "
        "help; every other flag is a training setting, the same as training/train_smd.py takes.",
        config_class=UnconditionalTrainingConfig,
        run=run,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _physical_cores() -> int:
    import psutil

    return max(1, psutil.cpu_count(logical=False) or 1)


def launch_command(
    launch: argparse.Namespace, script_argv: Sequence[str], module: str = TRAINING_MODULE
) -> tuple[list[str], dict]:
    """The ``accelerate launch`` command line (and environment) that runs the training ``module``."""
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
    if num_processes is not None and num_processes > 1:
        # accelerate's --cpu launcher starts one process; several CPU processes are started by the
        # multi-process launcher (torchrun) and told to use CPU + gloo through ACCELERATE_USE_CPU.
        command += ["--num_processes", str(num_processes), "--multi_gpu"]
        if on_cpu:
            env["ACCELERATE_USE_CPU"] = "true"
        command += ["--main_process_port", str(launch.main_process_port or _free_port())]
    else:
        if num_processes is not None or launch.config_file is None:
            # without a config file, one process unless told otherwise (accelerate would warn and guess)
            command += ["--num_processes", str(num_processes or 1)]
        if launch.cpu:
            command += ["--cpu"]
            if launch.config_file is None and "OMP_NUM_THREADS" not in env:
                # the thread count accelerate would pick (one process: the physical cores), passed so that it
                # does not print its "values were not passed" notice for a choice we agree with
                command += ["--num_cpu_threads_per_process", str(_physical_cores())]
    command += ["-m", module, *script_argv]
    return command, env


_LAUNCHER_FAILURE = re.compile(r"(CalledProcessError|ChildFailedError)")


def run_without_launcher_traceback(command: Sequence[str], env: dict) -> int:
    """Run ``command``, passing its output through, but drop traceback blocks that only say a child failed.

    The training process has already printed its error as one line; accelerate's launcher then adds its
    own traceback ending in ``CalledProcessError``, which would bury that line.
    """
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    block: list[bytes] = []
    pending = b""
    for chunk in iter(lambda: process.stderr.read1(4096), b""):
        pending += chunk
        pieces = re.split(rb"(?<=[\r\n])", pending)
        pending = pieces.pop() if pieces and not pieces[-1].endswith((b"\n", b"\r")) else b""
        for piece in pieces:
            if block or piece.startswith(b"Traceback (most recent call last):"):
                block.append(piece)
                if piece[:1] not in (b" ", b"\t") and not piece.startswith(
                    (b"Traceback", b"During handling")
                ):
                    text = b"".join(block).decode(errors="replace")
                    if not _LAUNCHER_FAILURE.search(piece.decode(errors="replace")):
                        sys.stderr.write(text)
                    block = []
                continue
            sys.stderr.write(piece.decode(errors="replace"))
            sys.stderr.flush()
    sys.stderr.write(b"".join(block).decode(errors="replace") + pending.decode(errors="replace"))
    return process.wait()


def launch_training(args: argparse.Namespace, task_class: type, module: str) -> int:
    """Check every setting of ``task_class``'s configuration in this process, then run ``module`` (the task's
    training entry point) through ``accelerate launch`` (or print the command with ``--dry_run``)."""
    from ..training import config_to_argv
    from ..training.arguments import config_from_namespace
    from ..training.engine import check_before_training

    config = config_from_namespace(task_class.config_class, args)
    check_before_training(config, task_class(config))  # every bad setting fails here, in this process
    command, env = launch_command(args, config_to_argv(config), module)
    if args.dry_run:
        print(" ".join(command))
        return 0
    return run_without_launcher_traceback(command, env)


def run(args: argparse.Namespace) -> int:
    from ..training import UnconditionalImageTask

    return launch_training(args, UnconditionalImageTask, TRAINING_MODULE)
