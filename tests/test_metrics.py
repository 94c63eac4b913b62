import sys

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from diffusers_smd import metrics
from diffusers_smd.digits import load_digits_images
from diffusers_smd.metrics import (
    compute_digits_metrics,
    compute_fid,
    extract_digits_features,
    frechet_distance,
    gaussian_statistics,
    prepare_digits_images,
)


def _random_covariance(rng, dim, rank=None):
    factor = rng.standard_normal((dim, rank or dim))
    return factor @ factor.T / dim


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    for dim in (1, 3, 8):
        mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim)
        s1, s2 = _random_covariance(rng, dim), _random_covariance(rng, dim)
        expected = (
            np.sum((mu1 - mu2) ** 2)
            + np.trace(s1)
            + np.trace(s2)
            - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
        )
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8, abs=1e-10)


def test_frechet_distance_diagonal_hand_case():
    # for diagonal covariances d^2 = ||mu1 - mu2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2, zeros included
    a, b = np.array([4.0, 1.0, 0.0, 9.0]), np.array([1.0, 1.0, 2.25, 0.0])
    mu1, mu2 = np.array([1.0, 0.0, 0.0, 2.0]), np.array([0.0, 0.0, 3.0, 2.0])
    expected = (1 + 9) + ((2 - 1) ** 2 + 0 + 1.5**2 + 3**2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # torch inputs, and symmetry
    assert frechet_distance(*map(torch.tensor, (mu2, np.diag(b), mu1, np.diag(a)))) == pytest.approx(expected)


def test_frechet_distance_of_identical_singular_gaussians_is_zero():
    rng = np.random.default_rng(1)
    sigma = _random_covariance(rng, 10, rank=3)
    mu = rng.standard_normal(10)
    # scipy's sqrtm route is off by ~2e-8 here; the SVD route must do much better
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-12


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


def test_gaussian_statistics_are_mean_and_unbiased_covariance():
    x = np.random.default_rng(2).standard_normal((50, 4))
    mu, sigma = gaussian_statistics(x)
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sigma, (x - x.mean(0)).T @ (x - x.mean(0)) / 49)
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_statistics(x[:1])


@pytest.fixture(scope="module")
def heldout():
    return load_digits_images("heldout", resolution=16)


def test_frechet_digits_distance_baselines(heldout):
    images, labels = heldout
    train, _ = load_digits_images("train", resolution=16)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    itself = compute_digits_metrics(images, images)
    real = compute_digits_metrics(train, "heldout")
    junk = compute_digits_metrics(noise, images)
    assert abs(itself["frechet_digits_distance"]) < 1e-6
    assert junk["frechet_digits_distance"] > 20 * real["frechet_digits_distance"] > 0
    # the class histogram of real held-out digits is their label distribution (classifier ~99% right)
    true_fractions = torch.bincount(labels, minlength=10).double() / len(labels)
    np.testing.assert_allclose(itself["class_histogram"], true_fractions.numpy(), atol=0.02)
    assert sum(itself["class_histogram"]) == pytest.approx(1.0)
    assert itself["num_generated"] == itself["num_reference"] == len(images)
    assert 0.9 < itself["classifier_confidence"] <= 1.0


def test_input_formats_give_the_same_classifier_input(heldout):
    images = heldout[0][:20]
    expected = prepare_digits_images(images)
    unit = (images + 1) / 2
    quantisation = 2 / 255 + 1e-6
    np.testing.assert_allclose(prepare_digits_images(unit, value_range=(0, 1)), expected, atol=1e-6)
    np.testing.assert_allclose(prepare_digits_images(images.repeat(1, 3, 1, 1)), expected, atol=1e-6)
    uint8 = (unit[:, 0] * 255).round().to(torch.uint8).numpy()
    np.testing.assert_allclose(prepare_digits_images(uint8), expected, atol=quantisation)
    pil_rgb = [Image.fromarray(a).convert("RGB") for a in uint8]
    np.testing.assert_allclose(prepare_digits_images(pil_rgb), expected, atol=quantisation)
    # channels-last float numpy, as a pipeline's output_type="np"
    np.testing.assert_allclose(
        prepare_digits_images(unit.permute(0, 2, 3, 1).numpy(), value_range=(0, 1)), expected, atol=1e-6
    )


def test_metrics_accept_other_sizes_and_load_the_reference_split_at_that_size(heldout):
    images = heldout[0]
    bigger, _ = load_digits_images("heldout", resolution=32)
    features_16, _ = extract_digits_features(images)
    features_32, _ = extract_digits_features(bigger)
    assert features_32.shape == features_16.shape
    # "heldout" is loaded at 32x32 too, so both sets take the same resize path: identical statistics
    assert abs(compute_digits_metrics(bigger, "heldout")["frechet_digits_distance"]) < 1e-6
    noise = torch.rand(len(images), 1, 32, 32) * 2 - 1
    assert (
        compute_digits_metrics(bigger, images)["frechet_digits_distance"]
        < 0.05 * (compute_digits_metrics(noise, images)["frechet_digits_distance"])
    )


@pytest.mark.parametrize(
    "images, kwargs, error, match",
    [
        (torch.rand(4, 1, 16, 16) * 255, {}, ValueError, "value_range"),
        (torch.rand(4, 2, 16, 16), {}, ValueError, "C in"),
        (torch.rand(4, 1, 16, 16), {"value_range": (1, 0)}, ValueError, "value_range"),
        (torch.full((4, 1, 16, 16), float("nan")), {}, ValueError, "non-finite"),
        ("not images", {}, TypeError, "images"),
        ([1, 2], {}, TypeError, "PIL"),
    ],
)
def test_bad_images_are_clear_errors(images, kwargs, error, match):
    with pytest.raises(error, match=match):
        prepare_digits_images(images, **kwargs)


def test_compute_digits_metrics_needs_two_images(heldout):
    with pytest.raises(ValueError, match="generated"):
        compute_digits_metrics(heldout[0][:1], heldout[0])


def test_compute_fid_without_a_library_says_what_to_install(monkeypatch, heldout):
    for module in ("torchmetrics", "torch_fidelity", "pytorch_fid"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match="pip install"):
        compute_fid(heldout[0], heldout[0])
    with pytest.raises(ValueError, match="backend"):
        compute_fid(heldout[0], heldout[0], backend="clean-fid")


def test_compute_fid_without_weights_says_what_to_download(monkeypatch, tmp_path, heldout):
    # a library that is importable but whose Inception weights are not on this machine
    for module in ("torchmetrics", "torch_fidelity"):
        (tmp_path / "fake" / module).mkdir(parents=True)
        (tmp_path / "fake" / module / "__init__.py").write_text("")
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="load_state_dict_from_url") as excinfo:
        compute_fid(heldout[0], heldout[0], backend="torchmetrics")
    assert metrics.FID_BACKEND_WEIGHTS["torchmetrics"][0] in str(excinfo.value)
    assert str(tmp_path / "hub") in str(excinfo.value)
