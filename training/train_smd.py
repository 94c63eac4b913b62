#!/usr/bin/env python
"""Train or fine-tune an unconditional SMD / E-TSDM diffusion model with accelerate.

    accelerate launch training/train_smd.py --output_dir smd-digits            # built-in digits
    accelerate launch training/train_smd.py --train_data_dir ./images --resolution 64 --output_dir out
    accelerate launch --config_file training/accelerate_configs/multi_gpu.yaml training/train_smd.py ...

The flags are those of diffusers' examples/unconditional_image_generation/train_unconditional.py
plus --objective {vanilla,smd,smd-mixture}, the SMD sizes, --etsdm and --pretrained_model_name_or_path;
`--help` lists them all. The loop itself lives in diffusers_smd.training (so that the installed
`diffusers-smd train` command runs exactly this code); it only composes package pieces:
diffusers_smd.data (images), diffusers_smd.models (SMD wrappers), diffusers_smd.losses (objectives),
diffusers_smd.schedulers (E-TSDM), diffusers_smd.checkpointing (atomic checkpoints) and
diffusers_smd.pipelines (the saved SMDPipeline).
"""

from diffusers_smd.training import main
from diffusers_smd.training_config import parse_args

if __name__ == "__main__":
    main(parse_args())
