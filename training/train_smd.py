#!/usr/bin/env python
"""Train or fine-tune an unconditional SMD / E-TSDM diffusion model with accelerate.

    accelerate launch training/train_smd.py --output_dir smd-digits            # built-in digits
    accelerate launch training/train_smd.py --train_data_dir ./images --resolution 64 --output_dir out
    accelerate launch --config_file training/accelerate_configs/multi_gpu.yaml training/train_smd.py ...

The flags are those of diffusers' examples/unconditional_image_generation/train_unconditional.py plus
--objective, the SMD sizes and --etsdm; `--help` lists them all. They are generated from
diffusers_smd.training.UnconditionalTrainingConfig, and the loop is the package's one training engine
(diffusers_smd.training), so `diffusers-smd train` runs exactly this code.
"""

import sys

from diffusers_smd.training import UnconditionalImageTask, run_script

if __name__ == "__main__":
    sys.exit(run_script(UnconditionalImageTask, prog="train_smd.py"))
