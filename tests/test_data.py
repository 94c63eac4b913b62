"""Training images: conversion of any PIL image, image folders with mixed modes and sizes, bad sources."""

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_smd.data import (
    TrainingImages,
    find_image_column,
    image_to_tensor,
    infer_num_channels,
    load_training_images,
)


def striped(width, height, mode="L"):
    """Black image whose middle third (by columns) is white."""
    array = np.zeros((height, width), dtype=np.uint8)
    array[:, width // 3 : 2 * width // 3] = 255
    return Image.fromarray(array).convert(mode)


def test_values_map_linearly_to_minus_one_one():
    image = Image.fromarray(np.array([[0, 51], [204, 255]], dtype=np.uint8))
    tensor = image_to_tensor(image, resolution=2, num_channels=1)
    expected = torch.tensor([[0, 51], [204, 255]], dtype=torch.float32) / 127.5 - 1
    assert tensor.shape == (1, 2, 2)
    torch.testing.assert_close(tensor[0], expected)


def test_center_crop_of_a_wide_image_keeps_the_middle():
    tensor = image_to_tensor(striped(24, 8), resolution=8, num_channels=1, center_crop=True)
    assert torch.all(tensor == 1.0)  # the middle third is white, the crop is exactly that third


def test_random_crop_stays_inside_the_image_and_depends_on_the_generator():
    crops = {
        image_to_tensor(striped(24, 8), 8, 1, center_crop=False, generator=torch.Generator().manual_seed(s))
        .sum()
        .item()
        for s in range(20)
    }
    assert len(crops) > 1  # different offsets give different content
    assert all(-64 <= c <= 64 for c in crops)


@pytest.mark.parametrize(
    "mode, channels",
    [("L", 1), ("RGB", 3), ("RGBA", 3), ("LA", 1), ("P", 3), ("1", 1), ("I;16", 1)],
)
def test_every_mode_becomes_the_requested_channels(mode, channels):
    image = striped(10, 6).convert("RGB").convert(mode) if mode != "I;16" else striped(10, 6).convert("I;16")
    assert infer_num_channels(image) == channels
    for num_channels in (1, 3):
        tensor = image_to_tensor(image, resolution=4, num_channels=num_channels)
        assert tensor.shape == (num_channels, 4, 4)
        assert tensor.min() >= -1 and tensor.max() <= 1


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert torch.all(image_to_tensor(image, 4, 3) == 1.0)
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    assert torch.allclose(image_to_tensor(half, 4, 1), torch.full((1, 4, 4), 127 / 127.5 - 1), atol=1 / 127.5)


def test_random_flip_is_a_function_of_seed_epoch_and_index():
    images = torch.arange(4.0).reshape(1, 1, 2, 2).repeat(32, 1, 1, 1)
    data = TrainingImages(images, 2, 1, random_flip=True, augmentation_seed=3)
    flipped = [bool((data[i]["input"] != images[i]).any()) for i in range(32)]
    assert 4 <= sum(flipped) <= 28  # about half
    assert all(torch.equal(data[i]["input"], images[i].flip(-1)) for i in range(32) if flipped[i])
    again = TrainingImages(images, 2, 1, random_flip=True, augmentation_seed=3)
    assert flipped == [bool((again[i]["input"] != images[i]).any()) for i in range(32)]
    again.set_epoch(1)
    assert flipped != [bool((again[i]["input"] != images[i]).any()) for i in range(32)]
    state = torch.get_rng_state()
    data[0]
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is never touched


def test_image_folder_with_mixed_modes_and_sizes(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    striped(30, 20, "RGB").save(folder / "a.png")
    striped(12, 12, "L").save(folder / "b.png")
    striped(9, 17, "RGBA").save(folder / "c.png")
    Image.new("P", (8, 8)).save(folder / "d.png")
    data = load_training_images(train_data_dir=str(folder), resolution=8, center_crop=True)
    assert len(data) == 4 and data.num_channels == 3
    assert all(data[i]["input"].shape == (3, 8, 8) for i in range(4))
    grey = load_training_images(train_data_dir=str(folder), resolution=8, num_channels=1)
    assert all(grey[i]["input"].shape == (1, 8, 8) for i in range(4))


def test_image_column_detection():
    assert find_image_column(["label", "img"]) == "img"
    with pytest.raises(ValueError, match="--image_column"):
        find_image_column(["label", "text"])
    with pytest.raises(ValueError, match="--image_column"):
        find_image_column(["image"], image_column="picture")


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"train_data_dir": "/no/such/folder"}, "--train_data_dir"),
        ({"dataset_name": "./no/such/dataset"}, "--dataset_name"),
        ({"dataset_name": "/no/such/dataset"}, "--dataset_name"),
        ({"dataset_name": "digits", "train_data_dir": "."}, "--train_data_dir"),
        ({"resolution": 0}, "--resolution"),
        ({"num_channels": 4}, "--num_channels"),
    ],
)
def test_bad_sources_name_the_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        load_training_images(**kwargs)


def test_empty_image_folder_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--train_data_dir"):
        load_training_images(train_data_dir=str(tmp_path), resolution=8)


def test_builtin_digits_are_the_default_source():
    from sklearn.datasets import load_digits

    from diffusers_smd.digits import load_digits_images

    data = load_training_images(resolution=16)
    heldout, _ = load_digits_images(split="heldout", resolution=16)
    assert data.num_channels == 1 and len(data) + len(heldout) == len(load_digits().images)
    item = data[0]["input"]
    assert item.shape == (1, 16, 16) and item.min() >= -1 and item.max() <= 1
    rgb = load_training_images(dataset_name="digits", resolution=8, num_channels=3)
    assert rgb[0]["input"].shape == (3, 8, 8) and torch.equal(rgb[0]["input"][0], rgb[0]["input"][2])
