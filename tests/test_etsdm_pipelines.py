"""E-TSDM schedulers inside stock diffusers pipelines, and config / save-load round trips.

Every pipeline run with an E-TSDM scheduler is compared with the same stock pipeline driven by the PLAIN
parent scheduler and a network (UNet, ControlNet, SD3 transformer) whose timestep argument is rewritten to
f(t) by a forward pre-hook (the independent reference, ``tests.pipeline_testing.condition_hook``): the
images must be identical, and so must the timesteps every network call received (both calls of a
second-order step included).
"""

import inspect
import json
import logging
import re

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    StableDiffusion3Img2ImgPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.utils import logging as diffusers_logging

from diffusers_smd import (
    ETSDM_VARIANTS,
    ETSDMDDIMScheduler,
    ETSDMDDPMScheduler,
    ETSDMFlowMatchEulerDiscreteScheduler,
    ETSDMSettings,
)
from tests.pipeline_testing import (
    condition_hook,
    reference_condition,
    seeded,
    tiny_controlnet,
    tiny_sd3_components,
    tiny_sd_components,
    tiny_sdxl_components,
    tiny_unet,
)

PAIRS = sorted(ETSDM_VARIANTS.items(), key=lambda pair: pair[0].__name__)
PAIR_IDS = [parent.__name__ for parent, _ in PAIRS]
DISCRETE = [(p, v) for p, v in PAIRS if v.etsdm_integer_timesteps]
DISCRETE_IDS = [p.__name__ for p, _ in DISCRETE]

# A Stable Diffusion scheduler config; each class takes the keys it knows.
SD_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
}
# half the range shared in 4 groups of 125, so that 5-step grids have shared conditions
THRESHOLD, INTERVALS = 500, 4
STEPS = 5
IMAGE = np.random.default_rng(0).random((1, 8, 8, 3)).astype(np.float32)
MASK = (np.random.default_rng(1).random((1, 8, 8, 1)) > 0.5).astype(np.float32)


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizers")
    sd = tiny_sd_components(folder / "sd")
    return {
        "sd": sd,
        "controlnet": {**sd, "controlnet": tiny_controlnet(sd["unet"])},
        "sdxl": tiny_sdxl_components(folder / "sdxl"),
        "sd3": tiny_sd3_components(folder / "sd3"),
    }


def run_pipeline(pipeline_class, parts, scheduler, networks, reference=False, **call_kwargs):
    """Images and the timesteps each network saw; ``reference``: the networks get f(t) through a hook."""
    pipe = pipeline_class(**parts, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    rule = (THRESHOLD, INTERVALS) if reference else (None, None)
    hooks = [condition_hook(getattr(pipe, name), *rule) for name in networks]
    try:
        images = pipe(generator=seeded(0), output_type="np", **call_kwargs).images
    finally:
        for _, handle in hooks:
            handle.remove()
    return images, [seen for seen, _ in hooks], pipe.scheduler


def assert_same_images_as_the_hooked_parent(
    pipeline_class, parts, parent, variant, networks, config, **kwargs
):
    scheduler = variant.from_config(config, etsdm_threshold=THRESHOLD, etsdm_intervals=INTERVALS)
    images, seen, used = run_pipeline(pipeline_class, parts, scheduler, networks, **kwargs)
    assert used is scheduler
    assert not torch.equal(scheduler.timesteps, scheduler.true_timesteps)  # the rule changed some conditions
    reference = parent.from_config(config)
    expected, expected_seen, _ = run_pipeline(
        pipeline_class, parts, reference, networks, reference=True, **kwargs
    )
    assert torch.equal(scheduler.true_timesteps, reference.timesteps)
    assert seen == expected_seen and len(seen[0]) > 0
    np.testing.assert_array_equal(images, expected)


PROMPT = {"prompt": "a cat", "num_inference_steps": STEPS, "guidance_scale": 2.0}
STOCK_PIPELINES = {
    "txt2img": (StableDiffusionPipeline, "sd", ("unet",), {"height": 8, "width": 8}),
    "img2img": (StableDiffusionImg2ImgPipeline, "sd", ("unet",), {"image": IMAGE, "strength": 0.6}),
    "inpaint": (
        StableDiffusionInpaintPipeline,
        "sd",
        ("unet",),
        {"image": IMAGE, "mask_image": MASK, "strength": 0.7, "height": 8, "width": 8},
    ),
    "sdxl": (StableDiffusionXLPipeline, "sdxl", ("unet",), {"height": 8, "width": 8}),
    "controlnet": (
        StableDiffusionControlNetPipeline,
        "controlnet",
        ("unet", "controlnet"),
        {"image": IMAGE, "height": 8, "width": 8},
    ),
}


@pytest.mark.parametrize("pipeline", list(STOCK_PIPELINES))
@pytest.mark.parametrize(("parent", "variant"), DISCRETE, ids=DISCRETE_IDS)
def test_stable_diffusion_pipelines_give_the_parents_images_with_the_network_at_f_t(
    components, pipeline, parent, variant
):
    pipeline_class, parts, networks, kwargs = STOCK_PIPELINES[pipeline]
    assert_same_images_as_the_hooked_parent(
        pipeline_class, components[parts], parent, variant, networks, SD_SCHEDULER_CONFIG, **PROMPT, **kwargs
    )


@pytest.mark.parametrize(
    ("pipeline_class", "kwargs"),
    [
        (StableDiffusion3Pipeline, {"height": 8, "width": 8}),
        (StableDiffusion3Img2ImgPipeline, {"image": IMAGE, "strength": 0.6}),
    ],
    ids=["sd3", "sd3-img2img"],
)
def test_sd3_pipelines_with_flow_matching(components, pipeline_class, kwargs):
    # SD3 feeds the transformer `timestep=t.expand(batch)` (float sigma * 1000); img2img uses scale_noise
    config = {"num_train_timesteps": 1000, "shift": 3.0}
    assert_same_images_as_the_hooked_parent(
        pipeline_class,
        components["sd3"],
        FlowMatchEulerDiscreteScheduler,
        ETSDMFlowMatchEulerDiscreteScheduler,
        ("transformer",),
        config,
        max_sequence_length=8,
        **PROMPT,
        **kwargs,
    )


@pytest.mark.parametrize(("parent", "variant"), PAIRS, ids=PAIR_IDS)
def test_ddpm_pipeline_gives_the_parents_images_with_the_unet_at_f_t(parent, variant):
    """DDPMPipeline passes `generator` to every step; parents whose step refuses it fail alike."""
    parts = {"unet": tiny_unet()}
    call = {"batch_size": 2, "num_inference_steps": 12}
    try:
        run_pipeline(DDPMPipeline, parts, parent(), ("unet",), reference=True, **call)
    except TypeError as error:
        scheduler = variant(etsdm_threshold=THRESHOLD, etsdm_intervals=INTERVALS)
        with pytest.raises(TypeError, match=re.escape(str(error))):
            run_pipeline(DDPMPipeline, parts, scheduler, ("unet",), **call)
        return
    assert_same_images_as_the_hooked_parent(DDPMPipeline, parts, parent, variant, ("unet",), {}, **call)


@pytest.mark.parametrize(("parent", "variant"), PAIRS, ids=PAIR_IDS)
def test_add_noise_with_an_exposed_timestep_after_set_begin_index(parent, variant):
    scheduler, reference = variant(), parent()
    for s in (scheduler, reference):
        s.set_timesteps(40)  # e.g. real ..., 75, 50, 25, 0 exposed as ..., 60, 40, 20, 0
    index = int((scheduler.timesteps != scheduler.true_timesteps).nonzero()[0])
    x0, noise = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    scheduler.set_begin_index(index)
    if hasattr(reference, "set_begin_index"):
        reference.set_begin_index(index)
    exposed, real = (
        scheduler.timesteps[index : index + 1].repeat(2),
        reference.timesteps[index : index + 1].repeat(2),
    )
    if hasattr(reference, "scale_noise"):  # flow matching
        got, expected = scheduler.scale_noise(x0, exposed, noise), reference.scale_noise(x0, real, noise)
    else:
        got, expected = scheduler.add_noise(x0, noise, exposed), reference.add_noise(x0, noise, real)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_ddim_pipeline_replacement_warns_and_assignment_keeps_etsdm(caplog):
    unet = tiny_unet()
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
    ((seen, handle),) = [condition_hook(pipe.unet)]
    pipe(num_inference_steps=12, generator=seeded(0), output_type="np")
    handle.remove()
    assert seen == [reference_condition(t, 100, 5) for t in pipe.scheduler.true_timesteps.tolist()]
    assert pipe.config.scheduler[1] == "ETSDMDDIMScheduler"


@pytest.mark.parametrize(("parent", "variant"), PAIRS, ids=PAIR_IDS)
def test_from_config_and_save_load_round_trips(tmp_path, parent, variant):
    family = [p for p, v in PAIRS if v.etsdm_integer_timesteps == variant.etsdm_integer_timesteps]
    default = 100 if variant.etsdm_integer_timesteps else 100.0
    # a plain config of any scheduler of the family -> E-TSDM with the default settings
    for plain_class in family[:4]:
        swapped = variant.from_config(plain_class().config)
        assert type(swapped) is variant and swapped.etsdm_settings == ETSDMSettings(default, 5)
        assert swapped.etsdm_enabled
    takes_prediction_type = "prediction_type" in inspect.signature(parent.__init__).parameters
    extra = {"prediction_type": "v_prediction"} if takes_prediction_type else {"shift": 2.0}
    scheduler = variant(num_train_timesteps=500, etsdm_threshold=40, etsdm_intervals=4, **extra)
    scheduler.save_pretrained(tmp_path / "etsdm")
    saved = json.loads((tmp_path / "etsdm" / "scheduler_config.json").read_text())
    assert saved["_class_name"] == variant.__name__
    assert (saved["etsdm_threshold"], saved["etsdm_intervals"]) == (40, 4)
    loaded = variant.from_pretrained(tmp_path / "etsdm")
    assert loaded.etsdm_settings == ETSDMSettings(40, 4)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(scheduler.config)
    # back to the plain class, saved, and to E-TSDM again: the settings survive as hidden config
    plain = parent.from_pretrained(tmp_path / "etsdm")
    assert type(plain) is parent and plain.config.num_train_timesteps == 500
    plain.save_pretrained(tmp_path / "plain")
    again = variant.from_pretrained(tmp_path / "plain")
    assert again.etsdm_settings == ETSDMSettings(40, 4)
    # a default-settings scheduler round-trips too (threshold None -> a tenth of the range)
    default_settings = variant.from_config(variant(num_train_timesteps=200).config).etsdm_settings
    assert default_settings == ETSDMSettings(20, 5)
    # `compatibles` offers the parent and every variant of the family
    assert parent in scheduler.compatibles
    assert {v for p, v in PAIRS if p in family} <= set(scheduler.compatibles)


@pytest.mark.parametrize("integer_timesteps", [True, False], ids=["discrete", "flow-matching"])
def test_swapping_between_variants_keeps_the_settings(integer_timesteps):
    family = [v for _, v in PAIRS if v.etsdm_integer_timesteps == integer_timesteps]
    config = family[0](num_train_timesteps=200, etsdm_threshold=40, etsdm_intervals=4).config
    for variant in family:
        swapped = variant.from_config(config)
        assert swapped.etsdm_settings == ETSDMSettings(40, 4)
        config = swapped.config  # chain the swaps


def test_pipeline_save_and_load_keeps_the_etsdm_scheduler(tmp_path):
    pipe = DDPMPipeline(unet=tiny_unet(), scheduler=ETSDMDDPMScheduler(etsdm_threshold=50))
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers_smd", "ETSDMDDPMScheduler"]
    loaded = DDPMPipeline.from_pretrained(tmp_path)
    assert type(loaded.scheduler) is ETSDMDDPMScheduler
    assert loaded.scheduler.etsdm_settings == ETSDMSettings(50, 5)


def test_stock_schedulers_do_not_list_the_variants():
    # diffusers' own classes are untouched: only the variants know about each other
    assert not any(v in DDPMScheduler().compatibles for v in ETSDM_VARIANTS.values())
    assert DPMSolverMultistepScheduler in ETSDMDDIMScheduler().compatibles
