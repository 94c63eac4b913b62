"""``python -m diffusers_smd.training.train_text_to_image``: what ``diffusers-smd train-text-to-image`` launches
through accelerate (the installed twin of ``training/train_text_to_image_smd.py``)."""

import sys

from .script import run_script
from .text_to_image import TextToImageTask

if __name__ == "__main__":
    sys.exit(run_script(TextToImageTask, prog="diffusers-smd train-text-to-image"))
