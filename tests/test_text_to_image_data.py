"""Captioned training data and what a batch becomes: crops and sizes, caption choice, empty prompts, the checks
made before training, and the UNet's conditioning against diffusers' training scripts' own recipe."""

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_smd.data import (
    CaptionedImages,
    check_caption_column,
    choose_caption,
    load_captioned_images,
    prepare_image,
)
from diffusers_smd.training import TextToImageTask, TextToImageTrainingConfig, Trainer, parse_config
from tests.pipeline_testing import (
    captioned_dataset,
    save_captioned_image_folder,
    save_tiny_text_to_image_pipeline,
    text_to_image_flags,
)


def columns_image(height: int, width: int) -> Image.Image:
    """An RGB image whose red value is the column index (so a crop's left edge can be read off)."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[..., 0] = np.arange(width, dtype=np.uint8)[None, :]
    return Image.fromarray(array)


def test_prepare_image_reports_the_original_size_and_the_crop_it_shows():
    image = columns_image(8, 20)  # height 8 = resolution: no resizing, so pixel columns survive exactly
    centred = prepare_image(image, 8, 3, center_crop=True)
    assert centred.original_size == (8, 20) and centred.crop_top_left == (0, 6)
    red = ((centred.tensor[0] + 1) * 127.5).round()
    assert red[0].tolist() == list(range(6, 14))
    flipped_any = False
    for seed in range(8):
        prepared = prepare_image(
            image, 8, 3, center_crop=False, random_flip=True, generator=torch.Generator().manual_seed(seed)
        )
        red = ((prepared.tensor[0] + 1) * 127.5).round().numpy()
        top, left = prepared.crop_top_left
        shown = np.asarray(image)[..., 0].astype(np.float32)
        if red[0, 0] > red[0, -1]:  # flipped: the corner is the one in the flipped image
            flipped_any = True
            shown = shown[:, ::-1]
        np.testing.assert_array_equal(red, shown[top : top + 8, left : left + 8])
    assert flipped_any


def test_choose_caption_follows_diffusers_scripts():
    assert choose_caption("a cat") == "a cat"
    drawn = {choose_caption(["a", "b", "c"], torch.Generator().manual_seed(s)) for s in range(30)}
    assert drawn == {"a", "b", "c"}
    assert choose_caption("a cat", torch.Generator().manual_seed(0), proportion_empty=1.0) == ""
    for bad in (3, None, [], ["a", 2]):
        with pytest.raises(ValueError, match="caption"):
            choose_caption(bad)


def test_captioned_items_are_reproducible_and_empty_prompts_have_the_asked_proportion():
    import datasets

    images = [columns_image(8, 12)] * 200
    data = datasets.Dataset.from_dict({"image": images, "text": [["x", "y"]] * 200})
    items = CaptionedImages(data, 8, "text", proportion_empty_prompts=0.5, center_crop=False, random_flip=True,
                            image_column="image", augmentation_seed=3)  # fmt: skip
    captions = [items[i]["caption"] for i in range(200)]
    assert 0.38 < captions.count("") / 200 < 0.62 and {"x", "y"} <= set(captions)
    again = CaptionedImages(data, 8, "text", proportion_empty_prompts=0.5, center_crop=False, random_flip=True,
                            image_column="image", augmentation_seed=3)  # fmt: skip
    for index in (0, 7, 199):  # the same item, whenever it is read (a resumed run reads it again)
        a, b = items[index], again[index]
        assert a["caption"] == b["caption"] and torch.equal(a["input"], b["input"])
        assert torch.equal(a["crop_top_left"], b["crop_top_left"])
    items.set_epoch(1)
    assert [items[i]["caption"] for i in range(200)] != captions  # another epoch, other draws


def test_load_captioned_images_checks_columns_and_sources(tmp_path):
    folder = save_captioned_image_folder(tmp_path / "images")
    data = load_captioned_images(train_data_dir=str(folder), resolution=8)
    assert len(data) == 6 and data.kind == "folder" and data[0]["caption"] == "a red cat"
    assert data[1]["original_size"].tolist() == [12, 10]
    memory = load_captioned_images(dataset=captioned_dataset(), resolution=8)
    assert memory.kind == "memory" and memory[0]["caption"] in ("a red cat", "one red cat")
    with pytest.raises(ValueError, match=r"--caption_column 'prompt'.*metadata.jsonl"):
        load_captioned_images(train_data_dir=str(folder), resolution=8, caption_column="prompt")
    with pytest.raises(ValueError, match="exactly one data source"):
        load_captioned_images(resolution=8)
    with pytest.raises(ValueError, match="exactly one data source"):
        load_captioned_images(train_data_dir=str(folder), dataset=captioned_dataset(), resolution=8)
    with pytest.raises(ValueError, match=r"--caption_column 'text': row 2 holds None"):
        import datasets

        check_caption_column(datasets.Dataset.from_dict({"text": ["a", "b", None]}), "text")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    return {
        name: save_tiny_text_to_image_pipeline(root / name, sdxl=name == "sdxl") for name in ("sd", "sdxl")
    }


def built_task(pretrained_folder, tmp_path):
    config = parse_config(
        TextToImageTrainingConfig,
        text_to_image_flags(pretrained_folder, tmp_path / "out", "--objective", "vanilla", "--random_flip"),
    )
    trainer = Trainer(config, TextToImageTask(config, train_dataset=captioned_dataset()))
    return trainer.task, trainer


def first_batch(trainer):
    return next(iter(trainer.dataloader))


def test_sd_conditioning_is_the_text_encoders_last_hidden_state(pretrained, tmp_path):
    """As diffusers' train_text_to_image.py: text_encoder(tokenizer(captions, max_length, truncation).input_ids)[0]."""
    task, trainer = built_task(pretrained["sd"], tmp_path)
    batch = first_batch(trainer)
    torch.manual_seed(5)
    latents, conditioning = task.batch_inputs(batch)
    pipe = task.pipeline
    ids = pipe.tokenizer(
        batch["caption"], padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids  # fmt: skip
    with torch.no_grad():
        expected = pipe.text_encoder(ids, return_dict=False)[0]
        torch.manual_seed(5)
        expected_latents = (
            pipe.vae.encode(batch["input"]).latent_dist.sample() * pipe.vae.config.scaling_factor
        )
    assert set(conditioning) == {"encoder_hidden_states"}
    torch.testing.assert_close(conditioning["encoder_hidden_states"], expected, rtol=0, atol=0)
    torch.testing.assert_close(latents, expected_latents, rtol=0, atol=0)
    assert latents.shape == (2, 4, 4, 4)  # 8 px images, VAE scale factor 2


def test_sdxl_conditioning_is_both_encoders_penultimate_states_pooled_embeds_and_time_ids(
    pretrained, tmp_path
):
    """As diffusers' train_text_to_image_sdxl.py: hidden_states[-2] of both encoders side by side, the second
    encoder's pooled projection, and time ids (original size, crop top-left, target size)."""
    task, trainer = built_task(pretrained["sdxl"], tmp_path)
    batch = first_batch(trainer)
    _, conditioning = task.batch_inputs(batch)
    pipe = task.pipeline
    states, pooled = [], None
    for tokenizer, encoder in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        ids = tokenizer(batch["caption"], padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids  # fmt: skip
        with torch.no_grad():
            output = encoder(ids, output_hidden_states=True)
        states.append(output.hidden_states[-2])
        pooled = output[0]
    torch.testing.assert_close(
        conditioning["encoder_hidden_states"], torch.cat(states, dim=-1), rtol=0, atol=0
    )
    added = conditioning["added_cond_kwargs"]
    torch.testing.assert_close(added["text_embeds"], pooled, rtol=0, atol=0)
    for row in range(2):
        original = tuple(batch["original_size"][row].tolist())
        crop = tuple(batch["crop_top_left"][row].tolist())
        expected = pipe._get_add_time_ids(
            original, crop, (8, 8), dtype=torch.float32,
            text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim,
        )  # fmt: skip
        torch.testing.assert_close(added["time_ids"][row : row + 1], expected, rtol=0, atol=0)
