"""``python -m diffusers_smd.training`` (what ``diffusers-smd train`` launches through accelerate)."""

import sys

from .script import run_script
from .unconditional import UnconditionalImageTask

if __name__ == "__main__":
    sys.exit(run_script(UnconditionalImageTask, prog="diffusers-smd train"))
