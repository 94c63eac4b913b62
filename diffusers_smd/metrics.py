"""Sample-quality metrics: the Frechet digits distance (our CPU-scale stand-in for FID), and FID / KID.

* :func:`frechet_distance` is the FID formula (Heusel et al. 2017) on Gaussian statistics:
  ``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``.
* :func:`compute_digits_metrics` fits those statistics to the penultimate-layer features of the small
  digits classifier shipped with the package (:func:`diffusers_smd.digits.load_digits_classifier`)
  and also reports the classifier's predicted-class histogram (mode coverage).
* :func:`compute_image_metrics` (and :func:`compute_fid`, :func:`compute_kid`) compute FID and KID with
  torchmetrics on the features of any network; by default torch-fidelity's Inception v3 (through torchmetrics),
  whose weights must already be on this machine (a path, or torch-fidelity's cache): nothing is downloaded.

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
    "IMAGE_METRICS",
    "INCEPTION_FEATURE_DIM",
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_URL",
    "METRICS_INSTALL_COMMAND",
    "check_inception_available",
    "check_inception_backend",
    "compute_fid",
    "compute_image_metrics",
    "compute_kid",
    "default_inception_weights_path",
    "find_inception_weights",
    "image_features",
    "inception_feature_extractor",
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
# FID and KID through torchmetrics; the Inception network is torch-fidelity's (through torchmetrics)

#: The metrics :func:`compute_image_metrics` computes on Inception (or any other) features.
IMAGE_METRICS = ("fid", "kid")
#: torch-fidelity's Inception v3 weights (the TensorFlow FID network converted to PyTorch), which torchmetrics'
#: FrechetInceptionDistance / KernelInceptionDistance use: the file name and where to download it.
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = (
    f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_FILE}"
)
#: Width of the Inception pool features FID and KID are computed on.
INCEPTION_FEATURE_DIM = 2048
#: How to install the libraries; pinning torch to the installed release keeps pip from replacing it
#: (torch-fidelity needs torchvision, whose newest release asks for a newer torch).
METRICS_INSTALL_COMMAND = 'pip install "diffusers-smd[metrics]" "torch==<the torch release you have>"'
_INCEPTION_KEYS = ("Conv2d_1a_3x3.conv.weight", "fc.weight")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def default_inception_weights_path() -> Path:
    """Where torch-fidelity caches its Inception weights: ``torch.hub.get_dir()/checkpoints/<file>``.

    ``torch.hub.get_dir()`` is ``$TORCH_HOME/hub`` (default ``~/.cache/torch/hub``).
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def _weights_instructions() -> str:
    cache = default_inception_weights_path()
    return (
        f"Download {INCEPTION_WEIGHTS_FILE} (95 MB) once, on a machine with network access, from "
        f"{INCEPTION_WEIGHTS_URL} (e.g. `curl -L -o {INCEPTION_WEIGHTS_FILE} {INCEPTION_WEIGHTS_URL}`), then put it "
        f"at {cache} (torch-fidelity's cache; `python -c \"import torch; torch.hub.load_state_dict_from_url("
        f"'{INCEPTION_WEIGHTS_URL}')\"` downloads it there) or pass its path with --inception_weights PATH "
        "(weights_path= in Python)"
    )


def find_inception_weights(weights_path: str | Path | None = None) -> Path:
    """The Inception weights file: ``weights_path``, or torch-fidelity's cache (:func:`default_inception_weights_path`).

    Nothing is downloaded. Raises FileNotFoundError naming the file, its URL and where to put it.
    """
    path = Path(weights_path).expanduser() if weights_path is not None else default_inception_weights_path()
    if not path.is_file():
        where = "the given weights path" if weights_path is not None else "torch-fidelity's cache"
        raise FileNotFoundError(
            f"the Inception weights for FID/KID are not on this machine ({where} {path} is not a file). "
            + _weights_instructions()
        )
    return path


def check_inception_backend() -> None:
    """Raise ImportError, saying what to install, unless torchmetrics and torch-fidelity both import."""
    missing = [name for name in ("torchmetrics", "torch_fidelity") if not _installed(name)]
    if missing:
        raise ImportError(
            f"FID/KID with the Inception network needs torchmetrics and torch-fidelity; not installed: "
            f"{', '.join(m.replace('_', '-') for m in missing)}. Install them with `{METRICS_INSTALL_COMMAND}` "
            f"(here: torch=={torch.__version__.split('+')[0]}). torch-fidelity needs torchvision, which must be "
            "the build made for your torch: for a CPU-only torch install it from the same index as torch. "
            "The Frechet digits distance (--metric fdd) needs none of this."
        )
    try:
        import torch_fidelity  # noqa: F401
        from torchmetrics.image.fid import NoTrainInceptionV3  # noqa: F401
    except Exception as error:  # a torchvision built for another torch fails here with many error types
        raise ImportError(
            f"torch-fidelity is installed but does not import ({type(error).__name__}: {error}). It imports "
            f"torchvision, which must be the build made for your torch {torch.__version__} (a CUDA torchvision "
            "beside a CPU-only torch fails like this): install the matching torchvision from the index you "
            "installed torch from."
        ) from error


def check_inception_available(weights_path: str | Path | None = None) -> Path:
    """Check, before any work, that the Inception network can be built offline; return the weights path.

    Raises ImportError (libraries missing; the message also says whether the weights are missing) or
    FileNotFoundError (weights missing), each saying what to install or download and where to put it.
    """
    try:
        path = find_inception_weights(weights_path)
    except FileNotFoundError as weights_error:
        try:
            check_inception_backend()
        except ImportError as library_error:
            raise ImportError(f"{library_error} Also, {weights_error}") from library_error
        raise
    check_inception_backend()
    return path


def inception_feature_extractor(weights_path: str | Path | None = None) -> torch.nn.Module:
    """torchmetrics' Inception v3 (torch-fidelity's FID network), 2048-d pool features of uint8 RGB images.

    The weights come from ``weights_path`` or torch-fidelity's cache, never from the network (see
    :func:`check_inception_available`). The file is first read with ``torch.load(weights_only=True)`` and must
    be an Inception state dict; only then does torch-fidelity load it. Input: uint8 (N, 3, H, W), any size
    (resized to 299x299 inside); output: float (N, 2048).
    """
    path = check_inception_available(weights_path)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path} could not be read as a weights file with torch.load(weights_only=True) ({error}); "
            + _weights_instructions()
        ) from error
    if not isinstance(state_dict, dict) or not all(key in state_dict for key in _INCEPTION_KEYS):
        raise ValueError(f"{path} is not torch-fidelity's Inception state dict. " + _weights_instructions())
    del state_dict
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=[str(INCEPTION_FEATURE_DIM)],
        feature_extractor_weights_path=str(path),
    )


class _GivenFeatures(torch.nn.Module):
    """The identity, as torchmetrics' ``feature`` network: features are computed once and fed to FID and KID."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _module_device(module: torch.nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.no_grad()
def image_features(
    images,
    feature_extractor: torch.nn.Module,
    *,
    value_range=(-1.0, 1.0),
    resolution: int | None = None,
    batch_size: int = 50,
) -> torch.Tensor:
    """``feature_extractor`` applied to ``images`` as uint8 RGB (N, 3, H, W) batches; float64 (N, D) on the CPU.

    ``images`` as in :func:`prepare_digits_images` (grey is repeated to RGB); ``resolution`` resizes to a
    square side first (None keeps the size; a PIL list must then share one size). Inception takes any size.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    unit = _unit_images(images, value_range, "RGB", resolution)
    pixels = (unit * 255).round().to(torch.uint8)
    device = _module_device(feature_extractor)
    chunks = [
        feature_extractor(chunk.to(device)).reshape(len(chunk), -1).double().cpu()
        for chunk in pixels.split(batch_size)
    ]
    return torch.cat(chunks)


def compute_image_metrics(
    generated,
    reference,
    metrics: Sequence[str] = IMAGE_METRICS,
    *,
    value_range=(-1.0, 1.0),
    reference_value_range=(-1.0, 1.0),
    feature_extractor: torch.nn.Module | None = None,
    weights_path: str | Path | None = None,
    resolution: int | None = None,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict:
    """FID and/or KID of ``generated`` against ``reference`` with torchmetrics.

    FID (Heusel et al. 2017): :func:`frechet_distance`'s formula on Gaussian fits of the features,
    computed by ``torchmetrics.image.fid.FrechetInceptionDistance``. KID (Binkowski et al. 2018): the unbiased
    MMD^2 with the kernel k(x, y) = (x.y / D + 1)^3, averaged over ``kid_subsets`` random subsets of
    ``min(kid_subset_size, N_generated, N_reference)`` images of each set, by
    ``torchmetrics.image.kid.KernelInceptionDistance`` (subsets drawn with ``seed``; the caller's RNG is untouched).

    Args:
        generated, reference: images as in :func:`prepare_digits_images` (N >= 2 each), values in
            ``value_range`` / ``reference_value_range``; fed to the network as uint8 RGB.
        metrics: a subset of :data:`IMAGE_METRICS`.
        feature_extractor: the network mapping uint8 (N, 3, H, W) images to (N, D) features; default: the
            Inception network of :func:`inception_feature_extractor` (weights from ``weights_path`` or the cache;
            built on ``device``). Each image goes through it once; FID and KID share the features.
        resolution: resize both sets to this square side first (None: keep the sizes).

    Returns ``{"fid": float, "kid": float, "kid_std": float, "kid_subset_size": int, "num_generated": int,
    "num_reference": int}`` (only the metrics asked for). Both are biased for small N: compare values computed
    with the same sample counts (thousands of images for FID with Inception).
    """
    metrics = tuple(metrics)
    if not metrics or not set(metrics) <= set(IMAGE_METRICS):
        raise ValueError(f"metrics must be a non-empty subset of {IMAGE_METRICS}, got {metrics!r}")
    for name, value, least in (("kid_subsets", kid_subsets, 1), ("kid_subset_size", kid_subset_size, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if feature_extractor is None:
        feature_extractor = inception_feature_extractor(weights_path).to(device)
    was_training = feature_extractor.training
    feature_extractor.eval()
    try:
        features = {
            name: image_features(images, feature_extractor, value_range=value_range_, resolution=resolution,
                                 batch_size=batch_size)
            for name, images, value_range_ in (("generated", generated, value_range),
                                               ("reference", reference, reference_value_range))
        }  # fmt: skip
    finally:
        feature_extractor.train(was_training)
    for name, feats in features.items():
        if len(feats) < 2:
            raise ValueError(f"{name} must hold at least 2 images, got {len(feats)}")
    fake, real = features["generated"], features["reference"]
    given = _GivenFeatures(fake.shape[1])
    result: dict = {}
    if "fid" in metrics:
        from torchmetrics.image.fid import FrechetInceptionDistance

        fid = FrechetInceptionDistance(feature=given)
        fid.update(real, real=True)
        fid.update(fake, real=False)
        result["fid"] = float(fid.compute())
    if "kid" in metrics:
        import warnings

        from torchmetrics.image.kid import KernelInceptionDistance

        subset_size = min(kid_subset_size, len(fake), len(real))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            kid = KernelInceptionDistance(feature=given, subsets=kid_subsets, subset_size=subset_size)
        kid.update(real, real=True)
        kid.update(fake, real=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mean, std = kid.compute()
        result.update(kid=float(mean), kid_std=float(std), kid_subset_size=subset_size)
    result.update(num_generated=len(fake), num_reference=len(real))
    return result


def compute_fid(generated, reference, **kwargs) -> float:
    """Inception FID of ``generated`` against ``reference``: :func:`compute_image_metrics` with ``metrics=("fid",)``.

    Needs ``pip install "diffusers-smd[metrics]"`` and the Inception weights on this machine (``weights_path=``
    or torch-fidelity's cache); otherwise raises ImportError / FileNotFoundError saying what to do, before any work.
    """
    return compute_image_metrics(generated, reference, ("fid",), **kwargs)["fid"]


def compute_kid(generated, reference, **kwargs) -> tuple[float, float]:
    """Inception KID (mean, standard deviation over subsets): :func:`compute_image_metrics` with ``("kid",)``."""
    result = compute_image_metrics(generated, reference, ("kid",), **kwargs)
    return result["kid"], result["kid_std"]
