"""Train / held-out images for the benchmark, as float tensors (N, C, R, R) in [-1, 1].

``data.dataset: digits`` uses the package's built-in digits and their fixed split
(:func:`diffusers_smd.digits.load_digits_images`); anything else is a Hub data set name (or
``imagefolder`` with ``data_dir``) read with ``datasets.load_dataset``, its ``image_column`` converted
to ``channels`` (1: grey "L", 3: "RGB") and resized (bilinear, antialiased) to ``resolution``.
"""

from __future__ import annotations

import numpy as np
import torch

from diffusers_smd.digits import load_digits_images, resize_images

__all__ = ["load_split"]


def _pil_to_tensor(images, channels: int, resolution: int) -> torch.Tensor:
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise ValueError(f"data.channels must be 1 or 3 for image data sets, got {channels}")
    tensors = []
    for image in images:
        array = np.asarray(image.convert(mode), dtype=np.float32).reshape(image.size[1], image.size[0], -1)
        tensor = torch.from_numpy(array / 127.5 - 1.0).permute(2, 0, 1)[None]
        tensors.append(resize_images(tensor, resolution))
    return torch.cat(tensors)


def load_split(data_config: dict, which: str) -> torch.Tensor:
    """The "train" or "heldout" images named by the config's ``data`` section."""
    if which not in ("train", "heldout"):
        raise ValueError(f"which must be 'train' or 'heldout', got {which!r}")
    resolution, channels = data_config["resolution"], data_config["channels"]
    split = data_config.get(f"{which}_split", which)
    if data_config["dataset"] == "digits":
        if channels != 1:
            raise ValueError(f"data.channels must be 1 for the built-in digits, got {channels}")
        images, _ = load_digits_images(split, resolution=resolution)
    else:
        import datasets

        if data_config["dataset"] == "imagefolder":
            dataset = datasets.load_dataset("imagefolder", data_dir=data_config["data_dir"], split=split)
        else:
            dataset = datasets.load_dataset(data_config["dataset"], split=split)
        column = data_config.get("image_column", "image")
        if column not in dataset.column_names:
            raise ValueError(f"data.image_column {column!r} is not a column of {dataset.column_names}")
        limit = data_config.get("max_train_images") if which == "train" else None
        if limit:
            dataset = dataset.select(range(min(limit, len(dataset))))
        images = _pil_to_tensor(dataset[column], channels, resolution)
    return images.clamp(-1.0, 1.0).contiguous()
