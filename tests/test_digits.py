import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits

from diffusers_smd.digits import (
    DIGITS_CLASSIFIER_PATH,
    DigitsClassifier,
    digits_split_fingerprint,
    digits_split_indices,
    load_digits_classifier,
    load_digits_dataset,
    load_digits_images,
    read_classifier_training_info,
    resize_images,
)


def test_split_is_disjoint_complete_and_stratified():
    train, heldout = digits_split_indices("train"), digits_split_indices("heldout")
    labels = load_digits().target
    assert np.intersect1d(train, heldout).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, heldout])), np.arange(len(labels)))
    for digit in range(10):
        n_class = int((labels == digit).sum())
        assert int((labels[heldout] == digit).sum()) == round(0.2 * n_class)


def test_split_follows_the_documented_hash_rule_and_is_the_one_the_classifier_was_trained_on():
    # independent re-implementation of the rule in digits_split_indices' docstring (seed 0, 20 %)
    labels = load_digits().target
    expected = []
    for digit in range(10):
        members = sorted(
            np.flatnonzero(labels == digit), key=lambda i: hashlib.sha256(f"0:{i}".encode()).hexdigest()
        )
        expected += members[: round(0.2 * len(members))]
    assert digits_split_indices("heldout").tolist() == sorted(int(i) for i in expected)
    # the shipped classifier recorded the split it was trained on; its held-out accuracy means nothing
    # if the split ever changes
    assert read_classifier_training_info()["heldout_split_sha256"] == digits_split_fingerprint()


def test_images_match_scikit_learn_at_native_resolution():
    images, labels = load_digits_images("all", resolution=8)
    raw = load_digits()
    assert images.dtype == torch.float32 and labels.dtype == torch.long
    assert images.shape == (1797, 1, 8, 8)
    np.testing.assert_allclose(images[:, 0].numpy(), raw.images / 16.0 * 2.0 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(labels.numpy(), raw.target)


def test_heldout_images_are_the_heldout_rows_resized():
    images, labels = load_digits_images("heldout", resolution=16)
    assert images.shape == (len(digits_split_indices("heldout")), 1, 16, 16)
    assert images.min() >= -1.0 and images.max() <= 1.0
    np.testing.assert_array_equal(labels.numpy(), load_digits().target[digits_split_indices("heldout")])


@pytest.mark.parametrize("size", [16, 5, 32])
def test_resize_matches_pil_bilinear(size):
    # torch's antialiased bilinear resize reproduces PIL's BILINEAR filter, up and down
    image = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    expected = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    actual = resize_images(torch.from_numpy(image)[None, None], size)[0, 0].numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_dataset_looks_like_a_hub_image_dataset():
    dataset = load_digits_dataset("heldout")
    assert dataset.features["label"].names == [str(d) for d in range(10)]
    first = dataset[0]["image"]
    assert isinstance(first, Image.Image) and first.mode == "L" and first.size == (8, 8)
    raw = load_digits()
    index = digits_split_indices("heldout")[0]
    np.testing.assert_array_equal(np.asarray(first), np.round(raw.images[index] / 16.0 * 255.0))
    assert dataset[0]["label"] == raw.target[index]
    assert len(dataset) == len(digits_split_indices("heldout"))
    assert load_digits_dataset("train", resolution=16)[0]["image"].size == (16, 16)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: load_digits_images("test"), "split"),
        (lambda: load_digits_images("train", resolution=0), "resolution"),
        (lambda: load_digits_dataset("validation"), "split"),
    ],
)
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_shipped_classifier_is_small_safetensors_only():
    files = sorted(p.name for p in DIGITS_CLASSIFIER_PATH.iterdir())
    assert files == ["config.json", "diffusion_pytorch_model.safetensors", "training_info.json"]
    assert sum(p.stat().st_size for p in DIGITS_CLASSIFIER_PATH.iterdir()) < 1_000_000


def test_shipped_classifier_accuracy_on_heldout_clean_and_blurred():
    classifier = load_digits_classifier()
    images, labels = load_digits_images("heldout", resolution=16)
    with torch.no_grad():
        clean = (classifier(images).argmax(1) == labels).float().mean().item()
        blurred_images = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        blurred = (classifier(blurred_images).argmax(1) == labels).float().mean().item()
    # measured 0.994 clean and 0.994 with a 3x3 box blur (README)
    assert clean >= 0.95
    assert blurred >= 0.9


def test_classifier_rejects_wrong_input_shape():
    with pytest.raises(ValueError, match="prepare_digits_images"):
        DigitsClassifier()(torch.zeros(2, 3, 16, 16))


def test_missing_classifier_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_digits_classifier"):
        load_digits_classifier(tmp_path)
