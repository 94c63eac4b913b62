"""The built-in ``digits`` data set and the small digits classifier shipped with the package.

Data: scikit-learn's bundled 8x8 hand-written digits (1797 images, grey values 0..16, no download),
rescaled to [-1, 1] and resized with bilinear interpolation (antialiased when shrinking, see
:func:`resize_images`). The train / held-out split is fixed by a deterministic rule that uses no
library random number generator (see :func:`digits_split_indices`), so it is identical on every
machine and library version.

Classifier: :class:`DigitsClassifier`, a tiny CNN (diffusers ``ModelMixin`` + ``ConfigMixin``) trained
by ``training/train_digits_classifier.py`` on the train split only. Its weights ship with the package
as safetensors in ``diffusers_smd/assets/digits_classifier`` and load with :func:`load_digits_classifier`.
:mod:`diffusers_smd.metrics` uses its penultimate layer as the feature space of the Frechet distance.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

__all__ = [
    "DIGITS_SPLIT_SEED",
    "DIGITS_HELDOUT_FRACTION",
    "DigitsClassifier",
    "digits_split_indices",
    "digits_split_fingerprint",
    "load_digits_images",
    "load_digits_dataset",
    "load_digits_classifier",
    "read_classifier_training_info",
    "resize_images",
    "DIGITS_CLASSIFIER_PATH",
]

#: Seed of the fixed train / held-out split (an input of a SHA-256 hash, not of a random generator).
DIGITS_SPLIT_SEED = 0
#: Fraction of each class that goes to the held-out split.
DIGITS_HELDOUT_FRACTION = 0.2
#: Folder of the shipped classifier (``config.json`` + ``diffusion_pytorch_model.safetensors``).
DIGITS_CLASSIFIER_PATH = Path(__file__).resolve().parent / "assets" / "digits_classifier"

_SPLITS = ("train", "heldout", "all")


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


def _check_resolution(resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


def digits_split_indices(split: str) -> np.ndarray:
    """Indices (into scikit-learn's ``load_digits()``) of one split, sorted ascending.

    Rule (stratified, deterministic, no library RNG): within each class, the samples are ranked by
    ``sha256(f"{DIGITS_SPLIT_SEED}:{index}")`` and the first ``round(DIGITS_HELDOUT_FRACTION * n_class)``
    of them are held out; the rest are the train split. "all" is every index.
    """
    _check_split(split)
    _, labels = _raw_digits()
    if split == "all":
        return np.arange(len(labels))
    heldout = []
    for digit in range(10):
        members = np.flatnonzero(labels == digit).tolist()
        members.sort(key=lambda i: hashlib.sha256(f"{DIGITS_SPLIT_SEED}:{i}".encode()).hexdigest())
        heldout.extend(members[: round(DIGITS_HELDOUT_FRACTION * len(members))])
    is_heldout = np.zeros(len(labels), dtype=bool)
    is_heldout[heldout] = True
    return np.flatnonzero(is_heldout if split == "heldout" else ~is_heldout)


def digits_split_fingerprint() -> str:
    """SHA-256 of the held-out indices; recorded with the shipped classifier to pin the split."""
    return hashlib.sha256(",".join(map(str, digits_split_indices("heldout").tolist())).encode()).hexdigest()


def resize_images(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize a (N, C, H, W) float batch to (N, C, resolution, resolution).

    Bilinear interpolation (``align_corners=False``) with ``antialias=True``, which low-pass filters
    when shrinking; both are convex combinations of input pixels, so the value range is preserved.
    Returns the input unchanged when it already has the requested size.
    """
    _check_resolution(resolution)
    if images.shape[-2:] == (resolution, resolution):
        return images
    return F.interpolate(
        images, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True
    )


def load_digits_images(split: str = "train", resolution: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The built-in digits as tensors.

    Args:
        split: "train" (1438 images), "heldout" (359 images) or "all" (1797); see :func:`digits_split_indices`.
        resolution: output side length; the 8x8 originals are resized with :func:`resize_images`.

    Returns:
        ``(images, labels)``: images float32 (N, 1, resolution, resolution) in [-1, 1]
        (``value / 16 * 2 - 1``, so the background is -1), labels int64 (N,) in 0..9.
    """
    _check_split(split)
    _check_resolution(resolution)
    images, labels = _raw_digits()
    index = digits_split_indices(split)
    x = torch.from_numpy(images[index]).unsqueeze(1) / 16.0
    x = resize_images(x, resolution) * 2.0 - 1.0
    return x.contiguous(), torch.from_numpy(labels[index])


def load_digits_dataset(split: str = "train", resolution: int | None = None):
    """The built-in digits as a ``datasets.Dataset`` shaped like a Hub image data set.

    Columns: "image" (``datasets.Image``: grey "L" PIL images) and "label" (``ClassLabel`` "0".."9").
    ``resolution=None`` keeps the native 8x8 images (values 0..16 mapped to 0..255); an integer gives
    the images of :func:`load_digits_images` at that size, rounded to uint8.
    """
    import datasets
    from PIL import Image

    _check_split(split)
    if resolution is None:
        images, labels = load_digits_images(split, resolution=8)
    else:
        images, labels = load_digits_images(split, resolution=resolution)
    pixels = ((images[:, 0] + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(p) for p in pixels], "label": labels.tolist()}, features=features
    )


class DigitsClassifier(ModelMixin, ConfigMixin):
    """A tiny CNN that classifies (B, 1, R, R) digits in [-1, 1] into 10 classes.

    Layout: two 3x3 conv stages (``conv_channels``) each followed by 2x2 max pooling, a 3x3 conv,
    a linear layer to ``feature_dim`` with ReLU (the features used by the Frechet digits distance),
    dropout, and a linear layer to ``num_classes`` logits. ``forward`` returns the logits;
    :meth:`features_and_logits` returns both.
    """

    @register_to_config
    def __init__(
        self,
        resolution: int = 16,
        in_channels: int = 1,
        conv_channels: tuple[int, int] = (32, 64),
        feature_dim: int = 64,
        num_classes: int = 10,
        dropout: float = 0.2,
    ):
        super().__init__()
        if resolution % 4:
            raise ValueError(f"resolution must be divisible by 4, got {resolution}")
        c1, c2 = conv_channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c2, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * (resolution // 4) ** 2, feature_dim),
            nn.ReLU(),
        )
        self.head_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate-layer features (B, feature_dim) and logits (B, num_classes)."""
        expected = (self.config.in_channels, self.config.resolution, self.config.resolution)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape (B, {expected[0]}, {expected[1]}, {expected[2]}), got "
                f"{tuple(images.shape)}; diffusers_smd.metrics.prepare_digits_images converts any size"
            )
        features = self.body(images)
        return features, self.head(self.head_dropout(features))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(images)[1]


def load_digits_classifier(path: str | Path | None = None) -> DigitsClassifier:
    """Load the shipped digits classifier (safetensors, no pickle) in eval mode.

    ``path`` defaults to :data:`DIGITS_CLASSIFIER_PATH`; a folder written by
    ``training/train_digits_classifier.py`` or ``DigitsClassifier.save_pretrained`` also works.
    """
    folder = Path(path) if path is not None else DIGITS_CLASSIFIER_PATH
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"no digits classifier at {folder} (expected config.json and diffusion_pytorch_model.safetensors); "
            "train one with `python training/train_digits_classifier.py --output_dir <folder>`"
        )
    model = DigitsClassifier.from_pretrained(folder, use_safetensors=True)
    model.eval()
    model.requires_grad_(False)
    return model


def read_classifier_training_info(path: str | Path | None = None) -> dict:
    """The ``training_info.json`` written next to a trained classifier (accuracy, split fingerprint, ...)."""
    folder = Path(path) if path is not None else DIGITS_CLASSIFIER_PATH
    return json.loads((folder / "training_info.json").read_text())
