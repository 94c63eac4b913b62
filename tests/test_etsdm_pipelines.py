"""E-TSDM schedulers inside stock diffusers pipelines, and config / save-load round trips.

Every pipeline run is compared with the same stock pipeline driven by the PLAIN parent scheduler
and a UNet whose timestep argument is rewritten to f(t) by a hook (the independent reference).
"""

import json
import logging

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UNet2DModel,
)
from diffusers.utils import logging as diffusers_logging
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from diffusers_smd import (
    ETSDMDDIMScheduler,
    ETSDMDDPMScheduler,
    ETSDMDPMSolverMultistepScheduler,
    ETSDMSettings,
)

PAIRS = [
    (DDPMScheduler, ETSDMDDPMScheduler),
    (DDIMScheduler, ETSDMDDIMScheduler),
    (DPMSolverMultistepScheduler, ETSDMDPMSolverMultistepScheduler),
]
PAIR_IDS = [p.__name__ for p, _ in PAIRS]


def reference_condition(t: int) -> int:
    """The paper's default rule (T=1000, threshold 100, 5 intervals), written independently."""
    return t if t >= 100 else (t // 20) * 20


def record_timesteps(unet, condition=None):
    """Record the timestep every UNet call receives; with `condition`, first rewrite it to condition(t)."""
    seen = []

    def hook(module, args, kwargs):
        args = list(args)
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        if condition is not None:
            t = torch.tensor(condition(int(t)))
            if len(args) > 1:
                args[1] = t
            else:
                kwargs["timestep"] = t
        seen.append(int(t))
        return tuple(args), kwargs

    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    return seen, handle


def tiny_unet2d():
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )


@pytest.fixture(scope="module")
def sd_components(tmp_path_factory):
    """Tiny random Stable Diffusion parts built locally: UNet, VAE, CLIP text encoder and tokenizer."""
    folder = tmp_path_factory.mktemp("tokenizer")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for letter in "abcdefghijklmnopqrstuvwxyz":
            vocab[letter + suffix] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=8)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=8,
            projection_dim=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        norm_num_groups=4,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=8,
    )
    return {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": unet,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def run_pipeline(pipeline_class, components, scheduler, condition=None, **call_kwargs):
    pipe = pipeline_class(**components, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    seen, handle = record_timesteps(pipe.unet, condition)
    try:
        output = pipe(generator=torch.Generator().manual_seed(0), output_type="np", **call_kwargs)
    finally:
        handle.remove()
    return output.images, seen, pipe.scheduler


STEPS = 12  # real grids then hold 83 or 84 (-> condition 80), so the rule is visible in every run


def test_ddpm_pipeline_conditions_the_unet_on_shared_timesteps():
    unet = tiny_unet2d()
    images, seen, scheduler = run_pipeline(
        DDPMPipeline, {"unet": unet}, ETSDMDDPMScheduler(), batch_size=2, num_inference_steps=STEPS
    )
    real = scheduler.true_timesteps.tolist()
    assert seen == [reference_condition(t) for t in real] and seen != real
    expected, reference_seen, _ = run_pipeline(
        DDPMPipeline,
        {"unet": unet},
        DDPMScheduler(),
        reference_condition,
        batch_size=2,
        num_inference_steps=STEPS,
    )
    assert reference_seen == seen
    np.testing.assert_array_equal(images, expected)


@pytest.mark.parametrize(("parent", "etsdm"), PAIRS, ids=PAIR_IDS)
def test_stable_diffusion_pipeline_swap(sd_components, parent, etsdm):
    kwargs = {"prompt": "a cat", "num_inference_steps": STEPS, "height": 8, "width": 8, "guidance_scale": 2.0}
    scheduler = etsdm.from_config(parent().config)
    images, seen, used = run_pipeline(StableDiffusionPipeline, sd_components, scheduler, **kwargs)
    assert used is scheduler
    real = scheduler.true_timesteps.tolist()
    assert seen == [reference_condition(t) for t in real] and seen != real
    expected, _, _ = run_pipeline(
        StableDiffusionPipeline, sd_components, parent(), reference_condition, **kwargs
    )
    np.testing.assert_array_equal(images, expected)


@pytest.mark.parametrize(("parent", "etsdm"), PAIRS, ids=PAIR_IDS)
def test_img2img_strength_starts_at_the_begin_index(sd_components, parent, etsdm):
    # strength 0.2 of 12 steps: the last two steps run; the first of them has real t 84 (DDPM/DDIM with
    # SD's steps_offset 1) exposed as 80, so add_noise gets an EXPOSED timestep and must use the real one
    image = np.random.default_rng(0).random((1, 8, 8, 3)).astype(np.float32)
    kwargs = {
        "prompt": "a cat",
        "image": image,
        "strength": 0.2,
        "num_inference_steps": STEPS,
        "guidance_scale": 2.0,
    }
    scheduler = etsdm.from_config(parent().config)
    images, seen, _ = run_pipeline(StableDiffusionImg2ImgPipeline, sd_components, scheduler, **kwargs)
    assert scheduler.begin_index == STEPS - 2
    real = scheduler.true_timesteps[STEPS - 2 :].tolist()
    assert seen == [reference_condition(t) for t in real] and seen != real
    expected, _, _ = run_pipeline(
        StableDiffusionImg2ImgPipeline, sd_components, parent(), reference_condition, **kwargs
    )
    np.testing.assert_array_equal(images, expected)


@pytest.mark.parametrize(("parent", "etsdm"), PAIRS, ids=PAIR_IDS)
def test_add_noise_with_an_exposed_timestep_after_set_begin_index(parent, etsdm):
    scheduler, reference = etsdm(), parent()
    for s in (scheduler, reference):
        s.set_timesteps(100)  # e.g. real ..., 30, 20, 10, 0 exposed as ..., 20, 20, 0, 0
    index = int((scheduler.timesteps != scheduler.true_timesteps).nonzero()[0])
    x0, noise = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    scheduler.set_begin_index(index)
    got = scheduler.add_noise(x0, noise, scheduler.timesteps[index : index + 1].repeat(2))
    if hasattr(reference, "set_begin_index"):
        reference.set_begin_index(index)
    expected = reference.add_noise(x0, noise, reference.timesteps[index : index + 1].repeat(2))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_ddim_pipeline_replacement_warns_and_assignment_keeps_etsdm(caplog):
    unet = tiny_unet2d()
    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            pipe = DDIMPipeline(unet=unet, scheduler=ETSDMDDIMScheduler())
    finally:
        diffusers_logging.disable_propagation()
    assert type(pipe.scheduler) is DDIMScheduler  # diffusers' DDIMPipeline forces a plain DDIMScheduler ...
    assert "etsdm_threshold" in caplog.text and "ignored" in caplog.text  # ... but not silently
    # supported path: assign after construction
    pipe.scheduler = ETSDMDDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    seen, handle = record_timesteps(pipe.unet)
    pipe(num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0), output_type="np")
    handle.remove()
    assert seen == [reference_condition(t) for t in pipe.scheduler.true_timesteps.tolist()]
    assert pipe.config.scheduler[1] == "ETSDMDDIMScheduler"


@pytest.mark.parametrize(("parent", "etsdm"), PAIRS, ids=PAIR_IDS)
def test_from_config_and_save_load_round_trips(tmp_path, parent, etsdm):
    # plain config -> E-TSDM (defaults on), for every plain config kind
    for plain in (DDPMScheduler(), DDIMScheduler(), DPMSolverMultistepScheduler()):
        swapped = etsdm.from_config(plain.config)
        assert (
            type(swapped) is etsdm
            and swapped.etsdm_settings == ETSDMSettings(100, 5)
            and swapped.etsdm_enabled
        )
    scheduler = etsdm(
        num_train_timesteps=500, etsdm_threshold=40, etsdm_intervals=4, prediction_type="v_prediction"
    )
    scheduler.save_pretrained(tmp_path / "etsdm")
    saved = json.loads((tmp_path / "etsdm" / "scheduler_config.json").read_text())
    assert saved["_class_name"] == etsdm.__name__
    assert (saved["etsdm_threshold"], saved["etsdm_intervals"]) == (40, 4)
    loaded = etsdm.from_pretrained(tmp_path / "etsdm")
    assert loaded.etsdm_settings == ETSDMSettings(40, 4) and loaded.config.prediction_type == "v_prediction"
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(scheduler.config)
    # back to the plain class, saved, and to E-TSDM again: the settings survive as hidden config
    plain = parent.from_pretrained(tmp_path / "etsdm")
    assert type(plain) is parent and plain.config.num_train_timesteps == 500
    plain.save_pretrained(tmp_path / "plain")
    again = etsdm.from_pretrained(tmp_path / "plain")
    assert again.etsdm_settings == ETSDMSettings(40, 4)
    # a default-settings scheduler round-trips too (threshold None -> T // 10)
    default = etsdm.from_config(etsdm(num_train_timesteps=200).config)
    assert default.etsdm_settings == ETSDMSettings(20, 5)


def test_pipeline_save_and_load_keeps_the_etsdm_scheduler(tmp_path):
    pipe = DDPMPipeline(unet=tiny_unet2d(), scheduler=ETSDMDDPMScheduler(etsdm_threshold=50))
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers_smd", "ETSDMDDPMScheduler"]
    loaded = DDPMPipeline.from_pretrained(tmp_path)
    assert type(loaded.scheduler) is ETSDMDDPMScheduler and loaded.scheduler.etsdm_settings == ETSDMSettings(
        50, 5
    )
