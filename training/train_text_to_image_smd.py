#!/usr/bin/env python
"""Fine-tune Stable Diffusion 1.x / 2.x or SDXL with SMD and / or E-TSDM (in full or with LoRA), with accelerate.

    accelerate launch training/train_text_to_image_smd.py \
        --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 \
        --dataset_name lambdalabs/naruto-blip-captions --resolution 512 --center_crop --random_flip \
        --objective smd --etsdm --train_batch_size 1 --gradient_accumulation_steps 4 --gradient_checkpointing \
        --max_train_steps 15000 --learning_rate 1e-05 --mixed_precision fp16 --output_dir sd-naruto-smd
    # LoRA: add --lora --rank 4 (and a larger --learning_rate, e.g. 1e-04)

The flags are those of diffusers' examples/text_to_image/train_text_to_image.py (and --rank of
train_text_to_image_lora.py) plus --objective, the SMD sizes and --etsdm; `--help` lists them all. They are
generated from diffusers_smd.training.TextToImageTrainingConfig, the loop is the package's one training engine
(diffusers_smd.training), and `diffusers-smd train-text-to-image` runs exactly this code. See docs/text-to-image.md.
"""

import sys

from diffusers_smd.training import TextToImageTask, run_script

if __name__ == "__main__":
    sys.exit(run_script(TextToImageTask, prog="train_text_to_image_smd.py"))
