"""Sample-quality metrics: the Frechet digits distance (our CPU-scale stand-in for FID) and real FID.

* :func:`frechet_distance` is the FID formula (Heusel et al. 2017) on Gaussian statistics:
  ``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``.
* :func:`compute_digits_metrics` fits those statistics to the penultimate-layer features of the small
  digits classifier shipped with the package (:func:`diffusers_smd.digits.load_digits_classifier`)
  and also reports the classifier's predicted-class histogram (mode coverage).
* :func:`compute_fid` computes the real Inception FID through torchmetrics or pytorch-fid, only when
  one of them is installed and its Inception weights are already on this machine.

Image inputs (:func:`prepare_digits_images`): a float torch tensor (N, C, H, W) or a float numpy array
(N, H, W, C) in ``value_range`` (default ``(-1, 1)``, the diffusers model space; pass ``(0, 1)`` for
pipeline outputs with ``output_type="pt"`` / ``"np"``), a uint8 numpy array or tensor (0..255, same
layouts), or a list of PIL images (any modes and sizes). C is 1 or 3 (RGB is converted to grey with
the ITU-R 601 luma weights, as PIL's ``convert("L")``); any size is resized with
:func:`diffusers_smd.digits.resize_images`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .digits import DigitsClassifier, load_digits_classifier, load_digits_images, resize_images

__all__ = [
    "frechet_distance",
    "gaussian_statistics",
    "prepare_digits_images",
    "extract_digits_features",
    "compute_digits_metrics",
    "compute_fid",
    "FID_BACKEND_WEIGHTS",
]

_LUMA_WEIGHTS = (0.299, 0.587, 0.114)
_RANGE_TOLERANCE = 1e-3


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Principal square root of a symmetric positive semi-definite matrix via ``eigh``.

    Eigenvalues below zero (round-off on singular covariances) are set to zero.
    """
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (the FID formula).

    ``d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``.

    The trace of the matrix square root is computed without a general (non-symmetric) ``sqrtm``:
    ``sigma1 sigma2`` is similar to ``A = sigma1^(1/2) sigma2 sigma1^(1/2) = B^T B`` with
    ``B = sigma2^(1/2) sigma1^(1/2)``, so ``tr((sigma1 sigma2)^(1/2))`` is the sum of the singular values
    of ``B`` (its nuclear norm). The symmetric square roots come from ``eigh`` in float64 and the singular
    values from an SVD, which never squares small eigenvalues; the result stays real and accurate for
    singular covariances (no eps offsets needed).
    Accepts numpy arrays or torch tensors; returns a Python float (>= 0 up to round-off).
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(_to_numpy(m), dtype=np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(_to_numpy(s), dtype=np.float64)) for s in (sigma1, sigma2))
    dim = mu1.shape[0]
    for name, value, shape in (("mu1", mu1, (dim,)), ("mu2", mu2, (dim,)),
                               ("sigma1", sigma1, (dim, dim)), ("sigma2", sigma2, (dim, dim))):  # fmt: skip
        if value.shape != shape:
            raise ValueError(f"{name} must have shape {shape} (from mu1), got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} contains non-finite values")
    # tr((S1 S2)^(1/2)) = tr((S1^(1/2) S2 S1^(1/2))^(1/2)) = sum of singular values of S2^(1/2) S1^(1/2)
    trace_sqrt = np.linalg.svd(_symmetric_sqrt(sigma2) @ _symmetric_sqrt(sigma1), compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64; needs N >= 2."""
    features = np.asarray(_to_numpy(features), dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must have shape (N >= 2, D), got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _to_numpy(value):
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def _check_value_range(value_range) -> tuple[float, float]:
    if (
        not isinstance(value_range, Sequence)
        or len(value_range) != 2
        or not all(isinstance(v, (int, float)) for v in value_range)
        or not value_range[0] < value_range[1]
    ):
        raise ValueError(
            f"value_range must be (low, high) with low < high, e.g. (-1, 1) or (0, 1); got {value_range!r}"
        )
    return float(value_range[0]), float(value_range[1])


def _unit_images(images, value_range, mode: str, resolution: int | None) -> torch.Tensor:
    """Validate and convert accepted inputs to float32 (N, C, H, W) in [0, 1] on the CPU.

    ``mode`` "L" gives C = 1 (RGB -> grey with ITU-R 601 luma weights), "RGB" gives C = 3 (grey
    repeated). ``resolution`` resizes to a square side with :func:`resize_images`; None keeps the size
    (then a PIL list must share one size).
    """
    low, high = _check_value_range(value_range)
    if isinstance(images, (list, tuple)):
        if not images or not all(hasattr(im, "convert") for im in images):
            raise TypeError("images given as a list must be a non-empty list of PIL images")
        if resolution is None and len({im.size for im in images}) > 1:
            raise ValueError("PIL images of different sizes need a resolution to be resized to")
        arrays = [
            np.asarray(im.convert(mode), dtype=np.float32).reshape(im.size[1], im.size[0], -1)
            for im in images
        ]
        tensors = [torch.from_numpy(a / 255.0).permute(2, 0, 1)[None] for a in arrays]
        if resolution is not None:
            tensors = [resize_images(t, resolution) for t in tensors]
        return torch.cat(tensors)
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise ValueError(f"numpy images must have shape (N, H, W) or (N, H, W, C), got {images.shape}")
        images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"images must be a torch tensor, a numpy array or a list of PIL images, got {type(images).__name__}"
        )
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(
            "images must have shape (N, C, H, W) (numpy: (N, H, W, C)) with N >= 1 and C in (1, 3), "
            f"got {tuple(images.shape)}"
        )
    if images.dtype == torch.uint8:
        unit = images.cpu().float() / 255.0
    elif images.is_floating_point():
        x = images.detach().cpu().float()
        if not torch.isfinite(x).all():
            raise ValueError("images contain non-finite values")
        lo, hi = x.min().item(), x.max().item()
        if lo < low - _RANGE_TOLERANCE or hi > high + _RANGE_TOLERANCE:
            raise ValueError(
                f"images have values in [{lo:.4g}, {hi:.4g}], outside value_range=({low:g}, {high:g}); pass the "
                "right value_range (e.g. (0, 1) for pipeline outputs) or clamp the images yourself"
            )
        # values within the 1e-3 tolerance outside the range are round-off: bring them onto it
        unit = ((x - low) / (high - low)).clamp(0.0, 1.0)
    else:
        raise TypeError(f"images must be a float or uint8 tensor/array, got dtype {images.dtype}")
    if mode == "L" and unit.shape[1] == 3:
        unit = (unit * torch.tensor(_LUMA_WEIGHTS).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    elif mode == "RGB" and unit.shape[1] == 1:
        unit = unit.expand(-1, 3, -1, -1)
    return unit if resolution is None else resize_images(unit, resolution)


def prepare_digits_images(images, *, resolution: int = 16, value_range=(-1.0, 1.0)) -> torch.Tensor:
    """Convert images to the classifier's input: float32 (N, 1, resolution, resolution) in [-1, 1].

    Args:
        images: a float torch tensor (N, C, H, W) or float numpy array (N, H, W, C) with values in
            ``value_range``; a uint8 tensor (N, C, H, W) or numpy array (N, H, W, C) / (N, H, W) with
            values 0..255 (``value_range`` ignored); or a list of PIL images (any mode and size, each
            converted to grey "L"). C must be 1 or 3 (RGB -> grey with ITU-R 601 luma weights).
        resolution: output side length (the classifier's ``config.resolution``).
        value_range: ``(low, high)`` of float inputs, mapped linearly to [-1, 1]. Values outside it
            by more than 1e-3 raise a ValueError (nothing out of range is clamped silently).
    """
    return _unit_images(images, value_range, "L", resolution) * 2.0 - 1.0


@torch.no_grad()
def extract_digits_features(
    images,
    *,
    classifier: DigitsClassifier | None = None,
    value_range=(-1.0, 1.0),
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate-layer features (N, feature_dim) and softmax probabilities (N, 10) of the digits classifier.

    ``images`` is anything :func:`prepare_digits_images` accepts; ``classifier`` defaults to the shipped one.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    classifier = classifier if classifier is not None else _shipped_classifier()
    x = prepare_digits_images(images, resolution=classifier.config.resolution, value_range=value_range)
    was_training = classifier.training
    classifier.eval()
    device = classifier.device
    features, probabilities = [], []
    for chunk in x.split(batch_size):
        feats, logits = classifier.features_and_logits(chunk.to(device))
        features.append(feats.float().cpu())
        probabilities.append(logits.float().softmax(dim=1).cpu())
    classifier.train(was_training)
    return torch.cat(features), torch.cat(probabilities)


_CLASSIFIER_CACHE: dict[str, DigitsClassifier] = {}


def _shipped_classifier() -> DigitsClassifier:
    if "shipped" not in _CLASSIFIER_CACHE:
        _CLASSIFIER_CACHE["shipped"] = load_digits_classifier()
    return _CLASSIFIER_CACHE["shipped"]


def _square_side(images) -> int | None:
    """Side length of square input images (None when not square or not known)."""
    if isinstance(images, (list, tuple)) and images and hasattr(images[0], "size"):
        height, width = images[0].size[1], images[0].size[0]
    elif isinstance(images, torch.Tensor) and images.ndim == 4:
        height, width = images.shape[-2:]
    elif isinstance(images, np.ndarray) and images.ndim in (3, 4):
        height, width = images.shape[1:3]
    else:
        return None
    return int(height) if height == width else None


def compute_digits_metrics(
    generated,
    reference="heldout",
    *,
    value_range=(-1.0, 1.0),
    reference_value_range=(-1.0, 1.0),
    classifier: DigitsClassifier | None = None,
    batch_size: int = 256,
) -> dict:
    """Frechet digits distance and class histogram of ``generated`` images against ``reference``.

    Args:
        generated: images as accepted by :func:`prepare_digits_images` (N >= 2), values in ``value_range``.
        reference: images likewise (in ``reference_value_range``), or a split name of the built-in digits
            ("heldout" default, "train", "all"), loaded at the generated images' size (16 if not square).
        classifier: defaults to the shipped digits classifier.

    Returns a dict with:
        "frechet_digits_distance": :func:`frechet_distance` between Gaussian fits of the classifier's
            penultimate features (lower is better; 0 for identical sets; biased upward for small N, so
            compare values computed with the same sample counts);
        "class_histogram": list of 10 fractions of ``generated`` predicted as each digit;
        "reference_class_histogram": the same for ``reference``;
        "classifier_confidence": mean max softmax probability on ``generated``;
        "num_generated", "num_reference".
    """
    if isinstance(reference, str):
        # same size as the generated images, so that both sets go through the same resize
        reference, _ = load_digits_images(reference, resolution=_square_side(generated) or 16)
        reference_value_range = (-1.0, 1.0)
    classifier = classifier if classifier is not None else _shipped_classifier()
    gen_features, gen_probs = extract_digits_features(
        generated, classifier=classifier, value_range=value_range, batch_size=batch_size
    )
    ref_features, ref_probs = extract_digits_features(
        reference, classifier=classifier, value_range=reference_value_range, batch_size=batch_size
    )
    for name, feats in (("generated", gen_features), ("reference", ref_features)):
        if len(feats) < 2:
            raise ValueError(f"{name} must hold at least 2 images for a covariance, got {len(feats)}")
    distance = frechet_distance(*gaussian_statistics(gen_features), *gaussian_statistics(ref_features))

    def histogram(probs: torch.Tensor) -> list[float]:
        counts = torch.bincount(probs.argmax(dim=1), minlength=probs.shape[1]).double()
        return (counts / counts.sum()).tolist()

    return {
        "frechet_digits_distance": distance,
        "class_histogram": histogram(gen_probs),
        "reference_class_histogram": histogram(ref_probs),
        "classifier_confidence": gen_probs.max(dim=1).values.mean().item(),
        "num_generated": len(gen_features),
        "num_reference": len(ref_features),
    }


# ----------------------------------------------------------------------------------------------------
# Real FID through an established library (optional; never a dependency of this package)

#: Inception weights each backend loads from ``torch.hub.get_dir()/checkpoints`` (file name, download URL).
FID_BACKEND_WEIGHTS = {
    "torchmetrics": (
        "weights-inception-2015-12-05-6726825d.pth",
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
    ),
    "pytorch-fid": (
        "pt_inception-2015-12-05-6726825d.pth",
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    ),
}
_BACKEND_MODULES = {"torchmetrics": ("torchmetrics", "torch_fidelity"), "pytorch-fid": ("pytorch_fid",)}
_INSTALL_HINT = {
    "torchmetrics": "pip install 'torchmetrics[image]'",
    "pytorch-fid": "pip install pytorch-fid",
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _find_fid_backend(backend: str) -> str:
    if backend not in ("auto", *_BACKEND_MODULES):
        raise ValueError(f"backend must be one of ('auto', 'torchmetrics', 'pytorch-fid'), got {backend!r}")
    candidates = list(_BACKEND_MODULES) if backend == "auto" else [backend]
    for name in candidates:
        if all(_installed(m) for m in _BACKEND_MODULES[name]):
            return name
    hints = " or ".join(f"`{_INSTALL_HINT[n]}`" for n in candidates)
    raise ImportError(
        f"compute_fid needs an FID library, and none is installed (looked for {', '.join(candidates)}). "
        f"Install one with {hints}; diffusers-smd does not depend on them. For the built-in digits use "
        "compute_digits_metrics, which needs nothing extra."
    )


def _fid_weights_path(backend: str, weights_path) -> Path:
    file_name, url = FID_BACKEND_WEIGHTS[backend]
    path = (
        Path(weights_path)
        if weights_path is not None
        else Path(torch.hub.get_dir()) / "checkpoints" / file_name
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"the Inception weights for FID ({backend}) are not on this machine: {path} does not exist. "
            f"Download them once with `python -c \"import torch; torch.hub.load_state_dict_from_url('{url}')\"` "
            f"(saves to {Path(torch.hub.get_dir()) / 'checkpoints'}) or pass weights_path=<the .pth file>."
        )
    return path


@torch.no_grad()
def compute_fid(
    generated,
    reference,
    *,
    value_range=(-1.0, 1.0),
    reference_value_range=(-1.0, 1.0),
    backend: str = "auto",
    weights_path: str | Path | None = None,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
) -> float:
    """Inception FID between two image sets through torchmetrics or pytorch-fid.

    Works only when the library is installed (``pip install 'torchmetrics[image]'`` or ``pip install
    pytorch-fid``) and its Inception weights are already in ``torch.hub.get_dir()/checkpoints`` (or given
    by ``weights_path``); otherwise raises ImportError / FileNotFoundError saying what to install or
    download, before doing any work. Images as in :func:`prepare_digits_images` (grey inputs are repeated
    to RGB; a PIL list must share one size); the library resizes them to 299x299. Use thousands of images per set for meaningful values.
    """
    name = _find_fid_backend(backend)
    path = _fid_weights_path(name, weights_path)
    gen = _unit_images(generated, value_range, "RGB", None)
    ref = _unit_images(reference, reference_value_range, "RGB", None)
    if name == "torchmetrics":
        from torchmetrics.image.fid import FrechetInceptionDistance

        metric = FrechetInceptionDistance(
            feature=2048, normalize=True, feature_extractor_weights_path=str(path)
        )
        metric = metric.to(device)
        for images, real in ((ref, True), (gen, False)):
            for chunk in images.split(batch_size):
                metric.update(chunk.to(device), real=real)
        return float(metric.compute())
    from pytorch_fid.inception import InceptionV3

    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True).to(
        device
    )
    model.eval()

    def features(images: torch.Tensor) -> np.ndarray:
        return torch.cat([model(c.to(device))[0].flatten(1).cpu() for c in images.split(batch_size)]).numpy()

    return frechet_distance(*gaussian_statistics(features(gen)), *gaussian_statistics(features(ref)))
