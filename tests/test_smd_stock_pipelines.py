"""An SMD UNet inside stock diffusers text-to-image pipelines: reproducible from the pipeline's generator.

The pipelines are diffusers' own, built from tiny local components and called exactly as with a plain UNet.
A forward pre-hook on the SMD identifier records what each UNet call used: (x_t, t, eta).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from PIL import Image

from diffusers_smd import ETSDMDDIMScheduler, SMDUNet2DConditionModel, derived_mixture_noise
from tests.pipeline_testing import NUM_TRAIN_TIMESTEPS, perturb, tiny_sd_components, tiny_sdxl_components

STEPS = 3
IMAGES_PER_PROMPT = 2


def smd_wrapped(unet: UNet2DConditionModel) -> SMDUNet2DConditionModel:
    """An SMD wrapper whose zero-initialised mixture output is perturbed, so eta changes the prediction."""
    model = SMDUNet2DConditionModel.from_unet(unet, latent_dim=4, num_hypernet_layers=1)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for hypernet in (model.hypernet_in, model.hypernet_out):
            weight = hypernet.proj_out.weight
            weight.copy_(0.5 * torch.randn(weight.shape, generator=generator))
    return model.eval()


def nine_channel_unet(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """The same tiny UNet with the 9 input channels of Stable Diffusion inpainting checkpoints."""
    return perturb(UNet2DConditionModel.from_config({**unet.config, "in_channels": 9}), seed=5)


def init_image() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def mask_image() -> Image.Image:
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:, 4:] = 255
    return Image.fromarray(mask)


# name -> (pipeline class, component builder, UNet adapter, extra call arguments)
PIPELINES = {
    "text-to-image": (StableDiffusionPipeline, tiny_sd_components, None, {}),
    "img2img": (StableDiffusionImg2ImgPipeline, tiny_sd_components, None, {"strength": 0.9}),
    "inpaint": (StableDiffusionInpaintPipeline, tiny_sd_components, None, {"strength": 1.0}),
    "inpaint-9-channel": (StableDiffusionInpaintPipeline, tiny_sd_components, nine_channel_unet, {}),
    "sdxl": (StableDiffusionXLPipeline, tiny_sdxl_components, None, {}),
}


def build(name: str, folder, scheduler_class=DDIMScheduler):
    """(SMD pipeline, the same pipeline with the plain wrapped UNet, the list the identifier hook fills)."""
    pipeline_class, components, adapt, _ = PIPELINES[name]
    parts = components(folder)
    if adapt is not None:
        parts["unet"] = adapt(parts["unet"])
    smd = smd_wrapped(parts["unet"])
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    smd.identifier.register_forward_pre_hook(lambda module, args: calls.append(args))
    scheduler = scheduler_class(num_train_timesteps=NUM_TRAIN_TIMESTEPS)
    pipes = []
    for unet in (smd, smd.unet):
        pipe = pipeline_class(**{**parts, "unet": unet}, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        pipes.append(pipe)
    return pipes[0], pipes[1], calls


def generate(name: str, pipe, seed: int, **overrides) -> np.ndarray:
    arguments = {
        "prompt": "a red fox",
        "num_inference_steps": STEPS,
        "num_images_per_prompt": IMAGES_PER_PROMPT,
        "guidance_scale": 5.0,
        "height": 8,
        "width": 8,
        "output_type": "np",
        "generator": torch.Generator().manual_seed(seed),
        **PIPELINES[name][3],
        **overrides,
    }
    if isinstance(pipe, (StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline)):
        arguments["image"] = init_image()
    if isinstance(pipe, StableDiffusionInpaintPipeline):
        arguments["mask_image"] = mask_image()
    if isinstance(pipe, StableDiffusionImg2ImgPipeline):
        arguments.pop("height"), arguments.pop("width")
    return pipe(**arguments).images


@pytest.mark.parametrize("name", list(PIPELINES))
def test_same_seed_same_images_other_seed_other_images(name, tmp_path):
    pipe, plain, calls = build(name, tmp_path)
    rng_before = torch.get_rng_state()
    images = generate(name, pipe, seed=0)
    assert images.shape == (IMAGES_PER_PROMPT, 8, 8, 3) and np.isfinite(images).all()
    assert np.array_equal(generate(name, pipe, seed=0), images)
    assert np.abs(generate(name, pipe, seed=1) - images).max() > 1e-3
    # Neither the pipeline nor the SMD UNet touched torch's global random state.
    assert torch.equal(torch.get_rng_state(), rng_before)
    # The mixture matters: the wrapped UNet alone gives other images from the same seed.
    assert np.abs(generate(name, plain, seed=0) - images).max() > 1e-3
    assert calls, "the SMD identifier was never called"


@pytest.mark.parametrize("name", list(PIPELINES))
def test_eta_is_fresh_per_step_and_image_and_shared_by_the_guidance_halves(name, tmp_path):
    pipe, _, calls = build(name, tmp_path)
    generate(name, pipe, seed=0)
    assert len(calls) >= 2
    for sample, timestep, eta in calls:
        # What the UNet received decides eta: the derivation of (x_t, t).
        assert torch.equal(eta, derived_mixture_noise(sample, timestep))
        unconditional, conditional = eta.chunk(2)  # classifier-free guidance doubles the batch
        assert torch.equal(unconditional, conditional)
        assert len(conditional) == IMAGES_PER_PROMPT
        assert not torch.allclose(conditional[0], conditional[1])  # each image its own eta
    for (_, _, eta), (_, _, next_eta) in zip(calls, calls[1:]):
        assert not torch.allclose(eta, next_eta)  # each step its own eta


@pytest.mark.parametrize("name", ["text-to-image", "sdxl"])
def test_shared_eta_makes_guidance_compare_one_mixture_component(name, tmp_path):
    """With the prompt as its own negative prompt, guidance must change nothing: eps_u + w (eps_c - eps_u) = eps_u
    when both halves see the same eta. Halves with their own etas (forced here through ``generator=``, a call
    no pipeline makes) would add w times the difference of two mixture components instead."""
    pipe, _, _ = build(name, tmp_path, scheduler_class=EulerAncestralDiscreteScheduler)
    unguided = generate(name, pipe, seed=0, guidance_scale=1.0)
    guided = generate(name, pipe, seed=0, guidance_scale=7.5, negative_prompt="a red fox")
    np.testing.assert_allclose(guided, unguided, atol=1e-5)

    def own_eta_per_half(module, args, kwargs):
        return args, {**kwargs, "generator": torch.Generator().manual_seed(123)}

    handle = pipe.unet.register_forward_pre_hook(own_eta_per_half, with_kwargs=True)
    try:
        split = generate(name, pipe, seed=0, guidance_scale=7.5, negative_prompt="a red fox")
    finally:
        handle.remove()
    assert np.abs(split - unguided).max() > 100 * np.abs(guided - unguided).max() + 1e-3


def test_an_image_does_not_depend_on_the_rest_of_its_batch(tmp_path):
    """Rounding-level differences between batch sizes keep each image's eta (see the key in mixture_noise.py)."""
    pipe, _, _ = build("text-to-image", tmp_path)
    alone = generate(
        "text-to-image", pipe, 0, num_images_per_prompt=1, generator=[torch.Generator().manual_seed(4)]
    )
    seeds = (4, 9, 2)
    batch = generate(
        "text-to-image",
        pipe,
        0,
        num_images_per_prompt=3,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
    )
    np.testing.assert_allclose(batch[0], alone[0], atol=1e-5)
    assert np.abs(batch[1] - batch[0]).max() > 1e-3


def test_eta_stays_fresh_when_the_timestep_repeats(tmp_path):
    """E-TSDM schedulers give the network the same condition for several steps; x_t still moves, so eta changes."""

    def etsdm_scheduler(num_train_timesteps):
        return ETSDMDDIMScheduler(
            num_train_timesteps=num_train_timesteps, etsdm_threshold=50, etsdm_intervals=2
        )

    pipe, _, calls = build("text-to-image", tmp_path, scheduler_class=etsdm_scheduler)
    generate("text-to-image", pipe, seed=0, num_inference_steps=20)
    timesteps = [int(timestep) for _, timestep, _ in calls]
    assert len(timesteps) == 20 and len(set(timesteps)) < 20  # shared conditions below the threshold
    etas = [eta for _, _, eta in calls]
    for i in range(len(etas)):
        for j in range(i + 1, len(etas)):
            assert not torch.allclose(etas[i], etas[j]), (i, j, timesteps[i], timesteps[j])
