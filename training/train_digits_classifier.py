"""Train the small digits classifier shipped in ``diffusers_smd/assets/digits_classifier``.

    python training/train_digits_classifier.py --output_dir diffusers_smd/assets/digits_classifier

Trains :class:`diffusers_smd.digits.DigitsClassifier` on the TRAIN split of the built-in digits
(16x16, [-1, 1]) only, with light augmentation so that slightly blurry or noisy generated digits are
still recognised: a random affine map (rotation, scale, shift), a random Gaussian blur and random
additive noise. Adam with a cosine learning-rate decay; CPU, about a minute. It then measures the
accuracy on the held-out split (clean and blurred) and writes, into ``--output_dir``:
``config.json`` + ``diffusion_pytorch_model.safetensors`` (``save_pretrained``, safetensors) and
``training_info.json`` (settings, accuracies, wall-clock time, the split fingerprint).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from diffusers_smd.digits import DigitsClassifier, digits_split_fingerprint, load_digits_images


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", required=True, help="folder for the trained classifier")
    parser.add_argument("--resolution", type=int, default=16, help="input side length of the classifier")
    parser.add_argument("--epochs", type=int, default=40, help="passes over the train split")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=2e-3, help="Adam peak learning rate")
    parser.add_argument("--weight_decay", type=float, default=1e-4)
    parser.add_argument("--max_rotation_degrees", type=float, default=12.0)
    parser.add_argument("--max_shift_pixels", type=float, default=1.5, help="at the classifier resolution")
    parser.add_argument("--scale_range", type=float, nargs=2, default=(0.85, 1.15))
    parser.add_argument("--max_blur_sigma", type=float, default=1.2, help="pixels; applied to half the batch")
    parser.add_argument("--max_noise_std", type=float, default=0.15, help="applied to a third of the batch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.resolution % 4 or args.resolution < 4:
        parser.error(f"--resolution must be a positive multiple of 4, got {args.resolution}")
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch_size must be positive")
    return args


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of (B, 1, H, W) with its own isotropic Gaussian (``sigma`` (B,), pixels; 0 = none)."""
    radius = 3
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, K)
    batch = images.shape[0]
    # separable conv with a per-image kernel: fold the batch into channels (groups=B)
    x = images.reshape(1, batch, *images.shape[-2:])
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel[:, None, None, :], groups=batch)
    x = F.conv2d(x, kernel[:, None, :, None], groups=batch)
    return x.reshape(images.shape)


def augment(images: torch.Tensor, args: argparse.Namespace, generator: torch.Generator) -> torch.Tensor:
    """Random affine + blur + noise on a (B, 1, R, R) batch in [-1, 1]; the result stays in [-1, 1]."""
    batch, _, size, _ = images.shape

    def uniform(low, high, n=batch):
        return low + (high - low) * torch.rand(n, generator=generator)

    angle = uniform(-1, 1) * math.radians(args.max_rotation_degrees)
    scale = uniform(*args.scale_range)
    shift = uniform(-1, 1, (2 * batch)).reshape(batch, 2) * args.max_shift_pixels * 2 / size
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # sample (x + 1) with zero padding so that pixels from outside the image are background (-1)
    x = F.grid_sample(images + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
    blur_sigma = uniform(0, args.max_blur_sigma) * (torch.rand(batch, generator=generator) < 0.5)
    x = gaussian_blur(x, blur_sigma)
    noise_std = uniform(0, args.max_noise_std) * (torch.rand(batch, generator=generator) < 1 / 3)
    x = x + noise_std[:, None, None, None] * torch.randn(x.shape, generator=generator)
    return x.clamp(-1, 1)


@torch.no_grad()
def accuracy(model: DigitsClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return (model(images).argmax(dim=1) == labels).float().mean().item()


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    train_x, train_y = load_digits_images("train", args.resolution)
    heldout_x, heldout_y = load_digits_images("heldout", args.resolution)

    model = DigitsClassifier(resolution=args.resolution)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_x) / args.batch_size)
    lr_schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.learning_rate, total_steps=args.epochs * steps_per_epoch, pct_start=0.1
    )
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        total = 0.0
        for i in range(steps_per_epoch):
            index = order[i * args.batch_size : (i + 1) * args.batch_size]
            loss = F.cross_entropy(model(augment(train_x[index], args, generator)), train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            lr_schedule.step()
            total += loss.item() * len(index)
        if epoch % 10 == 9 or epoch == args.epochs - 1:
            print(
                f"epoch {epoch + 1}: train loss {total / len(train_x):.4f}, "
                f"held-out accuracy {accuracy(model, heldout_x, heldout_y):.4f}"
            )
    seconds = time.perf_counter() - start

    sigma = torch.full((len(heldout_x),), 1.0)
    info = {
        "heldout_accuracy": accuracy(model, heldout_x, heldout_y),
        "heldout_accuracy_blur_sigma_1": accuracy(model, gaussian_blur(heldout_x, sigma), heldout_y),
        "train_accuracy": accuracy(model, train_x, train_y),
        "num_train": len(train_x),
        "num_heldout": len(heldout_x),
        "heldout_split_sha256": digits_split_fingerprint(),
        "training_seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "settings": {
            k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items() if k != "output_dir"
        },
    }
    output_dir = Path(args.output_dir)
    model.save_pretrained(output_dir, safe_serialization=True)
    (output_dir / "training_info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))
    return info


if __name__ == "__main__":
    main()
