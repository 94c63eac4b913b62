"""SMDPipeline.__call__: agreement with stock diffusers pipelines and hand-written loops, seeds, outputs, bad input."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from diffusers_smd import (
    ETSDMDDIMScheduler,
    ETSDMDDPMScheduler,
    ETSDMDPMSolverMultistepScheduler,
    SMDPipeline,
    derived_mixture_noise,
    share_timesteps,
)
from diffusers_smd.etsdm import DEFAULT_ETSDM_INTERVALS
from diffusers_smd.models import accepts_mixture_noise
from tests.pipeline_testing import (
    NUM_TRAIN_TIMESTEPS,
    ddpm_scheduler,
    mixture_unet,
    seeded,
    smd_unet,
    tiny_unet,
)
from tests.sampling_reference import sampling_loop

SCHEDULERS = {
    "ddpm": lambda: ddpm_scheduler(),
    "ddim": lambda: DDIMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS),
    "dpmsolver++": lambda: DPMSolverMultistepScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS, algorithm_type="dpmsolver++"
    ),
    "unipc": lambda: UniPCMultistepScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS),
    "euler": lambda: EulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS),
    "etsdm-ddpm": lambda: ETSDMDDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, etsdm_threshold=50),
    "etsdm-ddim": lambda: ETSDMDDIMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, etsdm_threshold=50),
    "etsdm-dpmsolver++": lambda: ETSDMDPMSolverMultistepScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS, algorithm_type="dpmsolver++", etsdm_threshold=50
    ),
}


def make_pipe(scheduler=None, unet=None):
    pipe = SMDPipeline(unet=unet or tiny_unet(), scheduler=scheduler or ddpm_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_matches_the_stock_ddpm_pipeline_for_a_plain_unet():
    unet = tiny_unet()
    ours = make_pipe(unet=unet)(
        batch_size=2, num_inference_steps=6, generator=seeded(3), output_type="np"
    ).images
    stock = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler())
    stock.set_progress_bar_config(disable=True)
    reference = stock(batch_size=2, num_inference_steps=6, generator=seeded(3), output_type="np").images
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_passes_eta_to_ddim_like_the_stock_ddim_pipeline():
    unet = tiny_unet()
    scheduler = DDIMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS)
    ours = make_pipe(scheduler, unet)(
        batch_size=2, num_inference_steps=5, generator=seeded(4), eta=0.7, output_type="np"
    ).images
    stock = DDIMPipeline(unet=unet, scheduler=scheduler)
    stock.set_progress_bar_config(disable=True)
    reference = stock(
        batch_size=2, num_inference_steps=5, generator=seeded(4), eta=0.7, output_type="np"
    ).images
    np.testing.assert_allclose(ours, reference, atol=1e-6)
    deterministic = make_pipe(scheduler, unet)(
        batch_size=2, num_inference_steps=5, generator=seeded(4), eta=0.0, output_type="np"
    ).images
    assert np.abs(deterministic - ours).max() > 1e-3  # eta reached the scheduler


def test_respects_init_noise_sigma_and_scale_model_input():
    """Euler scales the initial noise and the model input: compare with a hand-written sampling loop."""
    unet = tiny_unet()
    scheduler = EulerDiscreteScheduler()
    assert scheduler.init_noise_sigma > 10  # the check below would be weak otherwise
    ours = make_pipe(scheduler, unet)(
        batch_size=2, num_inference_steps=4, generator=seeded(5), output_type="pt"
    )

    reference_scheduler = EulerDiscreteScheduler()
    reference_scheduler.set_timesteps(4)
    generator = seeded(5)
    x = torch.randn((2, 1, 8, 8), generator=generator) * reference_scheduler.init_noise_sigma
    with torch.no_grad():
        for t in reference_scheduler.timesteps:
            model_output = unet(reference_scheduler.scale_model_input(x, t), t).sample
            x = reference_scheduler.step(model_output, t, x, generator=generator).prev_sample
    torch.testing.assert_close(ours.images, (x / 2 + 0.5).clamp(0, 1), atol=1e-6, rtol=0)


def test_etsdm_conditions_the_network_on_shared_timesteps_and_steps_on_the_real_grid():
    """Reference: plain DDIM stepping on the real t, the network called at share_timesteps(t) (E-TSDM rule)."""
    unet = tiny_unet()
    scheduler = ETSDMDDIMScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS, etsdm_threshold=50, etsdm_intervals=2
    )
    seen = []
    unet.register_forward_pre_hook(lambda module, args: seen.append(int(args[1])))
    ours = make_pipe(scheduler, unet)(
        batch_size=2, num_inference_steps=10, generator=seeded(2), output_type="pt"
    )

    reference_scheduler = DDIMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS)
    reference_scheduler.set_timesteps(10)
    real = reference_scheduler.timesteps
    conditions = [int(share_timesteps(int(t), 50, 2)) for t in real]
    assert seen == conditions and conditions != real.tolist()  # e.g. 40 -> 25, 20 -> 0
    x = torch.randn((2, 1, 8, 8), generator=seeded(2))
    with torch.no_grad():
        for t, condition in zip(real, conditions):
            x = reference_scheduler.step(unet(x, condition).sample, t, x).prev_sample
    torch.testing.assert_close(ours.images, (x / 2 + 0.5).clamp(0, 1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_each_scheduler_is_reproducible_per_seed(name):
    pipe = make_pipe(SCHEDULERS[name]())
    first = pipe(batch_size=2, num_inference_steps=4, generator=seeded(0), output_type="np").images
    again = pipe(batch_size=2, num_inference_steps=4, generator=seeded(0), output_type="np").images
    other = pipe(batch_size=2, num_inference_steps=4, generator=seeded(1), output_type="np").images
    assert first.shape == (2, 8, 8, 1) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


def test_output_types_agree_with_each_other():
    pipe = make_pipe()
    kwargs = {"batch_size": 2, "num_inference_steps": 3}
    as_pt = pipe(generator=seeded(7), output_type="pt", **kwargs).images
    as_np = pipe(generator=seeded(7), output_type="np", **kwargs).images
    as_pil = pipe(generator=seeded(7), output_type="pil", **kwargs).images
    (as_tuple,) = pipe(generator=seeded(7), output_type="np", return_dict=False, **kwargs)
    assert isinstance(as_pt, torch.Tensor) and as_pt.shape == (2, 1, 8, 8)
    assert as_pt.min() >= 0 and as_pt.max() <= 1
    assert isinstance(as_np, np.ndarray) and as_np.shape == (2, 8, 8, 1)
    np.testing.assert_allclose(as_np, as_pt.permute(0, 2, 3, 1).numpy(), atol=1e-7)
    np.testing.assert_array_equal(as_tuple, as_np)
    assert len(as_pil) == 2 and all(isinstance(im, PIL.Image.Image) and im.size == (8, 8) for im in as_pil)
    np.testing.assert_array_equal(np.asarray(as_pil[1]), (as_np[1, ..., 0] * 255).round().astype("uint8"))


def test_a_generator_list_gives_each_example_its_own_stream():
    pipe = make_pipe()
    batch = pipe(
        batch_size=2, num_inference_steps=4, generator=[seeded(11), seeded(12)], output_type="np"
    ).images
    for index, seed in enumerate((11, 12)):
        alone = pipe(batch_size=1, num_inference_steps=4, generator=seeded(seed), output_type="np").images
        np.testing.assert_allclose(batch[index], alone[0], atol=1e-5)


def test_callback_sees_every_step_and_can_replace_the_latents():
    pipe = make_pipe()
    seen = []

    def callback(pipeline, step, timestep, callback_kwargs):
        seen.append((step, int(timestep), tuple(callback_kwargs["latents"].shape)))
        return {"latents": torch.zeros_like(callback_kwargs["latents"])}

    out = pipe(
        batch_size=2,
        num_inference_steps=3,
        generator=seeded(0),
        output_type="pt",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents"],
    )
    assert [s for s, _, _ in seen] == [0, 1, 2]
    assert [t for _, t, _ in seen] == pipe.scheduler.timesteps.tolist()
    assert seen[0][2] == (2, 1, 8, 8)
    torch.testing.assert_close(out.images, torch.full((2, 1, 8, 8), 0.5))  # zero latents -> mid grey


@pytest.mark.parametrize("model", ["plain", "smd"])
def test_class_conditional_unet_uses_the_labels(model):
    unet = tiny_unet(num_class_embeds=3) if model == "plain" else smd_unet(num_class_embeds=3)
    pipe = make_pipe(unet=unet)
    kwargs = {"batch_size": 2, "num_inference_steps": 3, "output_type": "np"}
    zero = pipe(generator=seeded(0), class_labels=0, **kwargs).images
    zero_list = pipe(generator=seeded(0), class_labels=[0, 0], **kwargs).images
    mixed = pipe(generator=seeded(0), class_labels=torch.tensor([0, 2]), **kwargs).images
    np.testing.assert_array_equal(zero, zero_list)
    np.testing.assert_allclose(mixed[0], zero[0], atol=1e-6)
    assert np.abs(mixed[1] - zero[1]).max() > 1e-4
    with pytest.raises(ValueError, match="class_labels"):
        pipe(generator=seeded(0), **kwargs)
    for bad in ([0, 1, 2], 3, -1, "cat", [0.5, 1.0]):
        with pytest.raises(ValueError, match="class_labels"):
            pipe(generator=seeded(0), class_labels=bad, **kwargs)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-5), (torch.float16, 2e-2)])
def test_other_dtypes_agree_with_a_float32_loop_on_the_same_draws(dtype, tolerance):
    """The pipeline in ``dtype`` against a float32 DDIM loop fed the noise that run drew (upcast)."""
    unet = smd_unet()
    pipe = make_pipe(DDIMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS), smd_unet()).to("cpu", dtype)
    assert pipe.unet.dtype == dtype
    inputs, etas = [], []

    def record(module, args, kwargs):
        inputs.append(args[0].clone())
        etas.append(kwargs["mixture_noise"].clone())

    pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    images = pipe(batch_size=2, num_inference_steps=4, generator=seeded(0), output_type="pt").images
    assert images.dtype == dtype and inputs[0].dtype == etas[0].dtype == dtype

    reference_scheduler = DDIMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS)
    reference_scheduler.set_timesteps(4)
    x = inputs[0].float()  # DDIM: the first model input is the initial noise
    with torch.no_grad():
        for t, eta in zip(reference_scheduler.timesteps, etas):
            x = reference_scheduler.step(unet(x, t, mixture_noise=eta.float()).sample, t, x).prev_sample
    expected = (x / 2 + 0.5).clamp(0, 1)
    assert (expected - 0.5).abs().max() > 0.1  # not a blank image: the comparison has content
    torch.testing.assert_close(images.float(), expected, atol=tolerance, rtol=0)


BAD_CALLS = [
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"num_inference_steps": -3}, "num_inference_steps"),
    ({"num_inference_steps": 2.5}, "num_inference_steps"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 2, "generator": [torch.Generator()]}, "generator"),
    ({"generator": "seed"}, "generator"),
    ({"output_type": "jpg"}, "output_type"),
    ({"output_type": "latent"}, "output_type"),
    ({"eta": 0.5}, "eta"),  # DDPM's step takes no eta
    ({"class_labels": 1}, "class_labels"),  # unconditional UNet
    ({"callback_on_step_end_tensor_inputs": ["noise_pred"]}, "callback_on_step_end_tensor_inputs"),
]


@pytest.mark.parametrize(("kwargs", "argument"), BAD_CALLS)
def test_bad_call_arguments_raise_before_any_denoising(kwargs, argument):
    pipe = make_pipe()
    calls = []
    pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    with pytest.raises(ValueError, match=argument):
        pipe(**{"num_inference_steps": 2, **kwargs})
    assert calls == []


def test_missing_or_wrong_components_are_rejected():
    unet, scheduler = tiny_unet(), ddpm_scheduler()
    with pytest.raises(ValueError, match="unet"):
        SMDPipeline(unet=None, scheduler=scheduler)
    with pytest.raises(ValueError, match="scheduler"):
        SMDPipeline(unet=unet, scheduler=None)
    with pytest.raises(ValueError, match="unet"):
        SMDPipeline(unet=torch.nn.Conv2d(1, 1, 1), scheduler=scheduler)
    with pytest.raises(ValueError, match="scheduler"):
        SMDPipeline(unet=unet, scheduler="ddpm")
    with pytest.raises(ValueError, match="unet"):  # a scheduler where the UNet belongs
        SMDPipeline(unet=scheduler, scheduler=scheduler)


MIXTURE_MODELS = {"smd": smd_unet, "convention-double": mixture_unet}


@pytest.mark.parametrize("model", sorted(MIXTURE_MODELS))
def test_mixture_noise_comes_from_the_call_generator_and_changes_the_result(model):
    unet = MIXTURE_MODELS[model]()
    pipe = make_pipe(DDIMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS), unet)
    assert accepts_mixture_noise(pipe.unet)
    kwargs = {"batch_size": 2, "num_inference_steps": 4, "output_type": "np"}
    torch.manual_seed(123)
    first = pipe(generator=seeded(0), **kwargs).images
    torch.manual_seed(456)  # the global RNG must play no part
    again = pipe(generator=seeded(0), **kwargs).images
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - pipe(generator=seeded(1), **kwargs).images).max() > 1e-3

    # DDIM (eta 0) is deterministic given the initial noise: only eta can make a run differ from a run
    # in which the model gets eta = 0. Feed zeros through a pre-hook and compare.
    def zero_mixture_noise(module, args, kwargs):
        return args, {**kwargs, "mixture_noise": torch.zeros_like(kwargs["mixture_noise"])}

    handle = unet.register_forward_pre_hook(zero_mixture_noise, with_kwargs=True)
    without_mixture = pipe(generator=seeded(0), **kwargs).images
    handle.remove()
    assert np.abs(first - without_mixture).max() > 1e-3


@pytest.mark.parametrize("model", sorted(MIXTURE_MODELS))
def test_a_generator_list_draws_mixture_noise_per_example(model):
    pipe = make_pipe(unet=MIXTURE_MODELS[model]())
    batch = pipe(
        batch_size=2, num_inference_steps=4, generator=[seeded(21), seeded(22)], output_type="np"
    ).images
    for index, seed in enumerate((21, 22)):
        alone = pipe(batch_size=1, num_inference_steps=4, generator=seeded(seed), output_type="np").images
        np.testing.assert_allclose(batch[index], alone[0], atol=1e-5)


def smd_loop(unet, scheduler, steps, seed, condition=None):
    return sampling_loop(unet, scheduler, steps, seeded(seed), (2, 1, 8, 8), condition)


#: sampler -> (its parent diffusers scheduler, the condition timestep the network gets at real t)
PARENTS = {
    "dpmsolver++": (SCHEDULERS["dpmsolver++"], lambda t: t),
    "unipc": (SCHEDULERS["unipc"], lambda t: t),
    "euler": (SCHEDULERS["euler"], lambda t: t),
    "etsdm-ddpm": (ddpm_scheduler, lambda t: share_timesteps(t, 50, DEFAULT_ETSDM_INTERVALS)),
    "etsdm-dpmsolver++": (
        SCHEDULERS["dpmsolver++"],
        lambda t: share_timesteps(t, 50, DEFAULT_ETSDM_INTERVALS),
    ),
}


@pytest.mark.parametrize("name", sorted(PARENTS))
def test_smd_unet_with_each_scheduler_family_matches_a_loop_with_the_parent(name):
    """SMDPipeline with an SMD UNet against a hand-written loop with the parent scheduler (E-TSDM: the network
    at f(t), the parent stepping on the real t)."""
    unet = smd_unet()
    ours = make_pipe(SCHEDULERS[name](), unet)(
        batch_size=2, num_inference_steps=7, generator=seeded(6), output_type="pt"
    ).images
    parent, condition = PARENTS[name]
    expected = smd_loop(unet, parent(), 7, 6, condition)
    assert (expected - 0.5).abs().max() > 0.1
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    if name.startswith("etsdm-"):  # 7 steps put t = 42, 28, 14 below the threshold: f(t) != t matters
        assert (ours - smd_loop(unet, parent(), 7, 6)).abs().max() > 1e-4


def test_smd_pipeline_draws_fresh_mixture_noise_at_every_step():
    """eta_i is a new draw from the call's generator at step i; one eta per trajectory must fail this test."""
    unet = smd_unet()
    seen = []
    unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["mixture_noise"].clone()), with_kwargs=True
    )
    ours = make_pipe(DDIMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS), unet)(
        batch_size=2, num_inference_steps=4, generator=seeded(8), output_type="pt"
    ).images
    generator = seeded(8)
    initial = torch.randn((2, 1, 8, 8), generator=generator)
    etas = [torch.randn((2, 1, 8, 8), generator=generator) for _ in range(4)]
    assert len(seen) == 4 and all(torch.equal(a, b) for a, b in zip(seen, etas))

    def ddim(per_step_etas):
        scheduler = DDIMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS)
        scheduler.set_timesteps(4)
        x = initial
        with torch.no_grad():
            for t, eta in zip(scheduler.timesteps, per_step_etas):
                x = scheduler.step(unet(x, t, mixture_noise=eta).sample, t, x).prev_sample
        return (x / 2 + 0.5).clamp(0, 1)

    torch.testing.assert_close(ours, ddim(etas), atol=1e-6, rtol=0)
    assert (ours - ddim([etas[0]] * 4)).abs().max() > 1e-3  # what one draw per trajectory would give


def test_stock_ddpm_pipeline_with_an_smd_unet_matches_a_hand_written_loop():
    """DDPMPipeline calls ``unet(x, t)`` without a generator: under no_grad the SMD UNet derives eta from
    (x_t, t) (``derived_mixture_noise``), so the pipeline's generator fixes the images."""
    unet = smd_unet()
    stock = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler())
    stock.set_progress_bar_config(disable=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        images = stock(batch_size=2, num_inference_steps=5, generator=seeded(3), output_type="np").images

        torch.manual_seed(6)  # the global RNG plays no part any more
        scheduler = ddpm_scheduler()
        scheduler.set_timesteps(5)
        generator = seeded(3)
        x = torch.randn((2, 1, 8, 8), generator=generator)
        with torch.no_grad():
            for t in scheduler.timesteps:
                eta = derived_mixture_noise(x, t)  # what the model uses when it is given no eta
                x = scheduler.step(
                    unet(x, t, mixture_noise=eta).sample, t, x, generator=generator
                ).prev_sample
    expected = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(expected - 0.5).max() > 0.1
    np.testing.assert_allclose(images, expected, atol=1e-6)
