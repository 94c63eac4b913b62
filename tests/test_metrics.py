import sys

import numpy as np
import pytest
import scipy.linalg
import torch
from feature_testing import TinyFeatures, fid_by_hand, kid_by_hand, tiny_features_by_hand
from PIL import Image

from diffusers_smd import metrics
from diffusers_smd.digits import load_digits_images
from diffusers_smd.metrics import (
    INCEPTION_WEIGHTS_FILE,
    INCEPTION_WEIGHTS_URL,
    check_inception_available,
    compute_digits_metrics,
    compute_fid,
    compute_image_metrics,
    compute_kid,
    extract_digits_features,
    frechet_distance,
    gaussian_statistics,
    inception_feature_extractor,
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


# ----------------------------------------------------------------------------------------------------
# FID / KID through torchmetrics, wired with a tiny feature network in place of Inception


def test_fid_and_kid_match_the_formulas_on_the_features_of_a_tiny_network(heldout):
    images = heldout[0]
    generated = images[:40]
    reference = torch.nn.functional.avg_pool2d(images[40:80], 3, 1, 1)  # blurred other digits
    network = TinyFeatures()
    result = compute_image_metrics(generated, reference, feature_extractor=network, batch_size=16)
    f_gen, f_ref = tiny_features_by_hand(generated, network), tiny_features_by_hand(reference, network)
    expected_fid = fid_by_hand(f_gen, f_ref)
    assert expected_fid > 0.01  # the two sets differ: a real check
    assert result["fid"] == pytest.approx(expected_fid, rel=1e-6)
    # equal set sizes and subset_size >= N: every subset is the whole set, so KID is the full-sample MMD^2
    assert result["kid_subset_size"] == 40 and result["kid_std"] == pytest.approx(0.0, abs=1e-12)
    assert result["kid"] == pytest.approx(kid_by_hand(f_gen, f_ref), rel=1e-6)
    assert result["num_generated"] == result["num_reference"] == 40
    # the functions of one metric, and the metric of a set against itself
    assert compute_fid(generated, reference, feature_extractor=network) == pytest.approx(
        result["fid"], rel=1e-9
    )
    assert compute_kid(generated, reference, feature_extractor=network)[0] == pytest.approx(result["kid"])
    assert abs(compute_fid(generated, generated, feature_extractor=network)) < 1e-6


def test_kid_subsets_come_from_the_seed_and_leave_the_global_rng_alone(heldout):
    images = heldout[0]
    generated, reference = images[:30], images[100:160]  # subsets of 30 of the 60 references differ
    network = TinyFeatures()

    def kid(seed):
        return compute_image_metrics(generated, reference, ("kid",), feature_extractor=network, seed=seed)

    state = torch.random.get_rng_state()
    first, again, other = kid(0), kid(0), kid(1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first == again and first["kid"] != other["kid"] and first["kid_std"] > 0
    assert set(first) == {"kid", "kid_std", "kid_subset_size", "num_generated", "num_reference"}


def test_image_metrics_reject_bad_arguments(heldout):
    images = heldout[0][:4]
    with pytest.raises(ValueError, match="metrics"):
        compute_image_metrics(images, images, ("fdd",), feature_extractor=TinyFeatures())
    with pytest.raises(ValueError, match="kid_subset_size"):
        compute_image_metrics(images, images, kid_subset_size=1, feature_extractor=TinyFeatures())
    with pytest.raises(ValueError, match="generated"):
        compute_image_metrics(images[:1], images, feature_extractor=TinyFeatures())


@pytest.fixture
def empty_torch_hub(monkeypatch, tmp_path):
    """torch-fidelity's weights cache is torch.hub's: point it at an empty folder."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE


def _library(monkeypatch, installed: bool):
    if installed:
        monkeypatch.setattr(metrics, "check_inception_backend", lambda: None)
    else:
        monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # as if not installed


def test_missing_inception_weights_say_which_file_from_where_to_where(monkeypatch, empty_torch_hub, heldout):
    _library(monkeypatch, installed=True)
    with pytest.raises(FileNotFoundError) as excinfo:
        check_inception_available()
    message = str(excinfo.value)
    for needed in (
        INCEPTION_WEIGHTS_FILE,
        INCEPTION_WEIGHTS_URL,
        str(empty_torch_hub),
        "--inception_weights",
    ):
        assert needed in message
    with pytest.raises(FileNotFoundError, match="the given weights path"):
        check_inception_available(empty_torch_hub.parent / "elsewhere.pth")
    with pytest.raises(FileNotFoundError, match=INCEPTION_WEIGHTS_FILE):  # before any work
        compute_fid(heldout[0], heldout[0])
    empty_torch_hub.parent.mkdir(parents=True)
    empty_torch_hub.write_bytes(b"")
    assert check_inception_available() == empty_torch_hub  # the cache is where it looks


def test_missing_libraries_say_what_to_install(monkeypatch, empty_torch_hub, tmp_path):
    _library(monkeypatch, installed=False)
    with pytest.raises(ImportError) as excinfo:
        check_inception_available()
    message = str(excinfo.value)
    assert "torch-fidelity" in message and "diffusers-smd[metrics]" in message
    assert "torch==" + torch.__version__.split("+")[0] in message  # keeps pip from replacing torch
    assert INCEPTION_WEIGHTS_URL in message  # the weights are missing too: said in the same error
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"")
    with pytest.raises(ImportError) as excinfo:
        check_inception_available(weights)
    assert INCEPTION_WEIGHTS_URL not in str(excinfo.value)


def test_inception_weights_are_read_safely_before_the_library_loads_them(monkeypatch, tmp_path):
    _library(monkeypatch, installed=True)
    not_inception = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2)}, not_inception)
    with pytest.raises(ValueError, match="not torch-fidelity's Inception state dict"):
        inception_feature_extractor(not_inception)
    pickled_object = tmp_path / "object.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "fc.weight": TinyFeatures()}, pickled_object)
    with pytest.raises(ValueError, match="weights_only=True"):  # arbitrary objects are never unpickled
        inception_feature_extractor(pickled_object)
