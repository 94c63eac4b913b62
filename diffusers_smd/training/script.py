"""The entry point of the ``accelerate launch`` training scripts: parse the flags, train, report errors as one line."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .arguments import parse_config
from .engine import NonFiniteLossError, train
from .task import TrainingTask

__all__ = ["run_script"]


def run_script(
    task_class: type[TrainingTask], argv: Sequence[str] | None = None, prog: str | None = None
) -> int:
    """Parse ``argv`` into ``task_class``'s configuration and train; return the exit code.

    A user error (a bad setting, data or model, a non-finite loss) is printed as one line on stderr,
    without a traceback, and gives exit code 2 (1 for a non-finite loss).
    """
    name = prog or "train"
    try:
        config = parse_config(task_class.config_class, argv, prog=prog)
        train(config, task_class(config))
    except NonFiniteLossError as error:
        print(f"{name}: training stopped: {error}", file=sys.stderr)
        return 1
    except (ValueError, FileExistsError) as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 2
    return 0
