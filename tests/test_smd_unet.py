import hashlib
import inspect
import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DConditionModel, UNet2DModel
from pipeline_testing import tiny_sd_unet
from pipeline_testing import tiny_unet as factory_unet
from safetensors.torch import load_file, save_file
from torch import nn

from diffusers_smd.models import (
    SMDUNet2DConditionModel,
    SMDUNet2DModel,
    accepts_mixture_noise,
    derived_mixture_noise,
    mixture_noise_keys,
    mixture_noise_seeds,
)

#: The wrappers are tested around UNets with attention blocks (the factory's UNets, refined).
ATTENTION_UNET = dict(
    in_channels=3,
    out_channels=3,
    norm_num_groups=4,
    attention_head_dim=4,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
)
CONDITION_UNET = dict(attention_head_dim=4, cross_attention_dim=6, num_class_embeds=3, time_cond_proj_dim=5)


def tiny_unet(**overrides) -> UNet2DModel:
    return factory_unet(perturbed=False, **{**ATTENTION_UNET, **overrides})


def tiny_condition_unet(**overrides) -> UNet2DConditionModel:
    torch.manual_seed(0)
    return tiny_sd_unet(**{**CONDITION_UNET, **overrides}).eval()


def randomise_mixture_output_(model) -> None:
    """Make f_phi's zero-initialised output projections nonzero, so the mixture changes the output."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for hypernet in (model.hypernet_in, model.hypernet_out):
            hypernet.proj_out.weight.copy_(torch.randn(hypernet.proj_out.weight.shape, generator=gen) * 0.5)


def condition_inputs(batch: int = 2) -> dict:
    gen = torch.Generator().manual_seed(4)
    return dict(
        encoder_hidden_states=torch.randn(batch, 5, 6, generator=gen),
        class_labels=torch.tensor([0, 2][:batch]),
        timestep_cond=torch.randn(batch, 5, generator=gen),
        encoder_attention_mask=torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]][:batch]),
        down_block_additional_residuals=tuple(
            torch.randn(batch, c, s, s, generator=gen) for c, s in ((8, 8), (8, 8), (8, 4), (16, 4))
        ),
        mid_block_additional_residual=torch.randn(batch, 16, 4, 4, generator=gen),
    )


# ---------------------------------------------------------------- zero-init: wrapper == wrapped UNet


def test_fresh_smd_unet_2d_equals_the_wrapped_unet_exactly():
    unet = tiny_unet(num_class_embeds=4)
    model = SMDUNet2DModel.from_unet(unet, latent_dim=5).eval()
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([1, 50, 900])
    labels = torch.tensor([0, 3, 1])
    with torch.no_grad():
        expected = unet(x, t, class_labels=labels).sample
        assert torch.equal(model(x, t, class_labels=labels).sample, expected)
        assert torch.equal(model(x, t, labels, False)[0], expected)


def test_fresh_smd_condition_unet_equals_the_wrapped_unet_exactly_with_every_argument():
    unet = tiny_condition_unet()
    model = SMDUNet2DConditionModel.from_unet(unet, latent_dim=5).eval()
    x, t, kwargs = torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), condition_inputs()
    with torch.no_grad():
        expected = unet(x, t, **kwargs, return_dict=False)[0]
        assert torch.equal(model(x, t, **kwargs, return_dict=False)[0], expected)
        assert torch.equal(model(x, t, **kwargs).sample, expected)
    assert torch.equal(model(x, t, **kwargs, mixture_noise=torch.randn_like(x)).sample, expected)


@pytest.mark.parametrize(
    ("wrapper", "wrapped"), [(SMDUNet2DModel, UNet2DModel), (SMDUNet2DConditionModel, UNet2DConditionModel)]
)
def test_forward_signature_is_the_wrapped_one_plus_keyword_only_mixture_arguments(wrapper, wrapped):
    own = inspect.signature(wrapper.forward).parameters
    parent = inspect.signature(wrapped.forward).parameters
    assert list(own)[: len(parent)] == list(parent)
    assert own["mixture_noise"].kind is inspect.Parameter.KEYWORD_ONLY
    assert own["generator"].kind is inspect.Parameter.KEYWORD_ONLY
    assert len(own) == len(parent) + 2


# ---------------------------------------------------------------- where f_phi sits


def test_mixture_is_applied_after_conv_in_and_before_conv_norm_out():
    """Re-run UNet2DModel's forward by hand with f_phi inserted at the two places the method names."""
    model = SMDUNet2DModel.from_unet(tiny_unet(), latent_dim=5).eval()
    randomise_mixture_output_(model)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 500])
    eta = torch.randn_like(x)
    unet = model.unet
    with torch.no_grad():
        z = model.identifier(x, t, eta)
        emb = unet.time_embedding(unet.time_proj(t))
        h = model.hypernet_in(unet.conv_in(x), z)
        residuals = (h,)
        for block in unet.down_blocks:
            h, res = block(hidden_states=h, temb=emb)
            residuals += res
        h = unet.mid_block(h, emb)
        for block in unet.up_blocks:
            n = len(block.resnets)
            h, residuals = block(h, residuals[-n:], emb), residuals[:-n]
        h = model.hypernet_out(h, z)
        expected = unet.conv_out(unet.conv_act(unet.conv_norm_out(h)))
        actual = model(x, t, mixture_noise=eta).sample
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(actual, unet(x, t).sample, atol=1e-3)
    # Outside the wrapper's forward the hooks are inert: the inner UNet is the plain UNet.
    assert model._active_latent is None


def test_identifier_outputs_a_latent_map_at_input_resolution():
    model = SMDUNet2DModel.from_unet(tiny_unet(), latent_dim=7)
    z = model.identifier(torch.randn(2, 3, 8, 8), 4, torch.randn(2, 3, 8, 8))
    assert z.shape == (2, 7, 8, 8)
    assert model.config.identifier_block_out_channels == [2, 4]  # 1/4 of (8, 16), two stages
    assert model.identifier.unet.config.in_channels == 6  # concat[x_t, eta]


# ---------------------------------------------------------------- eta: fresh, reproducible, given


def reference_seed(row: torch.Tensor, timestep: float) -> int:
    """The documented derivation, written out with numpy and hashlib (pins the recipe: a change needs a new tag)."""
    x = row.double().numpy().reshape(-1)
    directions = torch.randn(
        16, x.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    ).numpy()
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    coordinates = np.sqrt(x.size) * (directions @ x) / np.linalg.norm(x)
    key = np.floor(coordinates * 64).astype("<i8")
    digest = hashlib.blake2b(
        b"mixture-noise/v1|" + repr(tuple(row.shape)).encode(), digest_size=8, person=b"diffusers-smd"
    )
    digest.update(struct.pack("<d", float(timestep)))
    digest.update(key.tobytes())
    return int.from_bytes(digest.digest(), "little")


def reference_eta(sample: torch.Tensor, timesteps) -> torch.Tensor:
    rows = []
    for row, t in zip(sample, timesteps):
        generator = torch.Generator().manual_seed(reference_seed(row, t))
        rows.append(torch.randn(row.shape, generator=generator))
    return torch.stack(rows).to(sample.dtype)


def test_explicit_mixture_noise_and_generator_are_used_as_given():
    model = SMDUNet2DModel.from_unet(tiny_unet(), latent_dim=5).eval()
    randomise_mixture_output_(model)
    x, t = torch.randn(2, 3, 8, 8), 30
    with torch.no_grad():
        seeded = [model(x, t, generator=torch.Generator().manual_seed(7)).sample for _ in range(2)]
        assert torch.equal(seeded[0], seeded[1])
        eta = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
        assert torch.equal(model(x, t, mixture_noise=eta).sample, seeded[0])
        other = model(x, t, generator=torch.Generator().manual_seed(8)).sample
        assert not torch.allclose(other, seeded[0])
        # A generator list gives each example its own stream, as diffusers' randn_tensor does.
        listed = model(x, t, generator=[torch.Generator().manual_seed(s) for s in (1, 2)]).sample
        etas = torch.cat(
            [torch.randn((1, 3, 8, 8), generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
        )
        assert torch.equal(listed, model(x, t, mixture_noise=etas).sample)


def test_while_autograd_records_a_plain_call_draws_eta_from_the_global_random_state():
    """Training behaviour, unchanged: fresh eta per call from torch's RNG (whose state the engine checkpoints)."""
    model = SMDUNet2DModel.from_unet(tiny_unet(), latent_dim=5).train()
    randomise_mixture_output_(model)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 9])
    torch.manual_seed(11)
    drawn = model(x, t).sample
    torch.manual_seed(11)
    eta = torch.randn(x.shape)
    assert torch.equal(drawn, model(x, t, mixture_noise=eta).sample)
    assert not torch.allclose(model(x, t).sample, model(x, t).sample)


def test_under_no_grad_a_plain_call_derives_eta_from_sample_and_timestep():
    model = SMDUNet2DModel.from_unet(tiny_unet(), latent_dim=5).eval()
    randomise_mixture_output_(model)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([30, 600])
    rng_before = torch.get_rng_state()
    with torch.no_grad():
        first, second = model(x, t).sample, model(x, t).sample
        expected = model(x, t, mixture_noise=reference_eta(x, [30, 600])).sample
    with torch.inference_mode():
        third = model(x, t).sample
    assert torch.equal(first, expected) and torch.equal(second, expected) and torch.equal(third, expected)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global random state is not consumed
    with torch.no_grad():
        assert not torch.allclose(model(x, t + 1).sample, first)  # another timestep, another eta


def test_mixture_noise_seeds_follow_the_documented_recipe():
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 999.0, 17.5])
    assert mixture_noise_seeds(x, t) == [reference_seed(row, v) for row, v in zip(x, t.tolist())]
    assert torch.equal(derived_mixture_noise(x, t), reference_eta(x, t.tolist()))
    half = x.to(torch.bfloat16)
    assert mixture_noise_seeds(half, 5) == [reference_seed(row, 5) for row in half]
    assert mixture_noise_keys(x).shape == (3, 16) and mixture_noise_keys(x).dtype == torch.int64


def test_derived_eta_depends_only_on_each_rows_values_and_timestep():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 4, 8, 8, generator=gen)
    eta = derived_mixture_noise(x, 500)
    # Per row: independent of the rest of the batch, of memory layout and of the timestep's form.
    assert torch.equal(derived_mixture_noise(x[2:3], 500), eta[2:3])
    assert torch.equal(derived_mixture_noise(x.to(memory_format=torch.channels_last), 500), eta)
    for same in (500.0, torch.tensor(500), torch.tensor([500.0]), torch.full((4,), 500)):
        assert torch.equal(derived_mixture_noise(x, same), eta)
    per_row = derived_mixture_noise(x, torch.tensor([500, 1, 500, 2]))
    assert torch.equal(per_row[[0, 2]], eta[[0, 2]]) and not torch.allclose(per_row[1], eta[1])
    # Identical rows share eta (classifier-free guidance's two halves); distinct rows do not.
    doubled = torch.cat([x, x])
    assert torch.equal(derived_mixture_noise(doubled, 500), torch.cat([eta, eta]))
    for a in range(4):
        for b in range(a + 1, 4):
            assert abs(torch.corrcoef(torch.stack([eta[a].flatten(), eta[b].flatten()]))[0, 1]) < 0.25
    with pytest.raises(ValueError, match="`timestep`"):
        derived_mixture_noise(x, torch.tensor([1, 2]))


def test_derived_eta_is_standard_normal_stable_under_rounding_and_fresh_for_a_real_change():
    x = torch.randn(8, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    eta = derived_mixture_noise(x, 250)
    assert eta.shape == x.shape and eta.dtype == x.dtype
    assert abs(eta.mean().item()) < 0.02 and abs(eta.std().item() - 1.0) < 0.02  # 32768 draws: 6 sigma
    # Rounding-level differences (another batch size or kernel) keep the key, hence eta.
    nudged = x * (1 + 1e-7 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(nudged, x)
    assert torch.equal(derived_mixture_noise(nudged, 250), eta)
    # A change of 1 % (smaller than a denoising step) gives an independent draw, at the same timestep too.
    stepped = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    moved = derived_mixture_noise(stepped, 250)
    for row in range(8):
        correlation = torch.corrcoef(torch.stack([moved[row].flatten(), eta[row].flatten()]))[0, 1]
        assert abs(correlation) < 0.1  # 4096 pairs: an independent draw (6 sigma)
    # Keys are scale free and the all-zero row is defined.
    assert torch.equal(mixture_noise_keys(3 * x), mixture_noise_keys(x))
    assert torch.equal(mixture_noise_keys(torch.zeros(1, 4, 8, 8)), torch.zeros(1, 16, dtype=torch.int64))


def test_stock_ddpm_pipeline_runs_an_smd_model_reproducibly_from_its_generator():
    model = SMDUNet2DModel.from_unet(tiny_unet(), latent_dim=5).eval()
    randomise_mixture_output_(model)
    etas = []
    model.identifier.register_forward_pre_hook(lambda module, args: etas.append((args[0], args[1], args[2])))

    def run(unet, seed):
        pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=20))
        pipe.set_progress_bar_config(disable=True)
        generator = torch.Generator().manual_seed(seed)
        return pipe(batch_size=2, num_inference_steps=4, generator=generator, output_type="np").images

    images = run(model, 0)
    assert images.shape == (2, 8, 8, 3) and np.isfinite(images).all()
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert np.array_equal(run(model, 0), images)
    assert np.abs(run(model, 1) - images).max() > 1e-3
    assert np.abs(run(model.unet, 0) - images).max() > 1e-3  # the mixture noise matters
    # The eta of each step is the derivation of that step's input: fresh per step and per image.
    first_run = etas[:4]
    for sample, timestep, eta in first_run:
        assert torch.equal(eta, derived_mixture_noise(sample, timestep))
        assert not torch.allclose(eta[0], eta[1])
    assert all(not torch.allclose(a[2], b[2]) for a, b in zip(first_run, first_run[1:]))
    assert accepts_mixture_noise(model) and not accepts_mixture_noise(model.unet)


def test_config_exposes_the_wrapped_unet_keys_pipelines_read():
    unet = tiny_condition_unet()
    model = SMDUNet2DConditionModel.from_unet(unet, latent_dim=5)
    for key in (
        "sample_size",
        "in_channels",
        "out_channels",
        "time_cond_proj_dim",
        "addition_time_embed_dim",
    ):
        assert getattr(model.config, key) == getattr(unet.config, key)
    assert model.config.latent_dim == 5
    assert model.dtype == unet.dtype
    # `from_config(model.config)` rebuilds the same model config (the mirrored UNet keys are not arguments).
    rebuilt = SMDUNet2DConditionModel.from_config(model.config)

    def public(config):
        return {k: v for k, v in config.items() if not k.startswith("_")}

    assert public(rebuilt.unet.config) == public(unet.config)
    assert rebuilt.config.identifier_block_out_channels == model.config.identifier_block_out_channels


# ---------------------------------------------------------------- training


def test_gradient_reaches_identifier_hypernetworks_and_unet():
    model = SMDUNet2DModel.from_unet(tiny_unet(), latent_dim=5).train()
    randomise_mixture_output_(model)
    x = torch.randn(2, 3, 8, 8)
    model(x, torch.tensor([5, 9])).sample.square().mean().backward()
    for name in (
        "identifier.unet.conv_in",
        "identifier.unet.conv_out",
        "hypernet_in.proj_in",
        "hypernet_in.latent_to_u.0",
        "hypernet_out.proj_in",
        "hypernet_out.latent_to_u.1",
        "unet.conv_in",
        "unet.conv_out",
    ):
        grad = model.get_submodule(name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_gradient_checkpointing_reaches_the_wrapped_unet_and_keeps_gradients():
    torch.manual_seed(0)
    model = SMDUNet2DModel.from_unet(tiny_unet(), latent_dim=5).train()
    randomise_mixture_output_(model)
    x, t, eta = torch.randn(2, 3, 8, 8), torch.tensor([5, 9]), torch.randn(2, 3, 8, 8)

    def grads():
        model.zero_grad()
        model(x, t, mixture_noise=eta).sample.square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.enable_gradient_checkpointing()
    assert model.unet.is_gradient_checkpointing
    assert all(block.gradient_checkpointing for block in model.unet.down_blocks)
    for a, b in zip(plain, grads()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- save / load


LOAD_SCRIPT = """
import sys, json, torch
from safetensors.torch import load_file, save_file
from diffusers import DDPMPipeline
import diffusers_smd
folder, inputs, out = sys.argv[1:4]
model = diffusers_smd.SMDUNet2DModel.from_pretrained(folder + "/unet").eval()
pipe = DDPMPipeline.from_pretrained(folder)
t = load_file(inputs)
with torch.no_grad():
    y = model(t["x"], t["t"], mixture_noise=t["eta"]).sample
    y_pipe = pipe.unet.eval()(t["x"], t["t"], mixture_noise=t["eta"]).sample
save_file({"y": y, "y_pipe": y_pipe}, out)
print(json.dumps({"class": type(pipe.unet).__name__, "sample_size": pipe.unet.config.sample_size}))
"""


def test_save_and_load_round_trip_exactly_in_a_fresh_process(tmp_path, subprocess_env):
    model = SMDUNet2DModel.from_unet(tiny_unet(), latent_dim=5, num_hypernet_layers=3).eval()
    randomise_mixture_output_(model)
    pipe = DDPMPipeline(unet=model, scheduler=DDPMScheduler(num_train_timesteps=20))
    pipe.save_pretrained(tmp_path / "pipe")
    assert (tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert not list((tmp_path / "pipe").rglob("*.bin"))
    x, t, eta = torch.randn(2, 3, 8, 8), torch.tensor([3, 17]), torch.randn(2, 3, 8, 8)
    save_file({"x": x, "t": t, "eta": eta}, tmp_path / "inputs.safetensors")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_SCRIPT,
            str(tmp_path / "pipe"),
            str(tmp_path / "inputs.safetensors"),
            str(tmp_path / "out.safetensors"),
        ],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info == {"class": "SMDUNet2DModel", "sample_size": 8}
    with torch.no_grad():
        expected = model(x, t, mixture_noise=eta).sample
    loaded = load_file(tmp_path / "out.safetensors")
    assert torch.equal(loaded["y"], expected)
    assert torch.equal(loaded["y_pipe"], expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_load_and_forward(tmp_path, dtype):
    model = SMDUNet2DConditionModel.from_unet(tiny_condition_unet(), latent_dim=5)
    randomise_mixture_output_(model)
    model.save_pretrained(tmp_path)
    loaded = SMDUNet2DConditionModel.from_pretrained(tmp_path, torch_dtype=dtype).eval()
    assert {p.dtype for p in loaded.parameters()} == {dtype}
    kwargs = {
        k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v)
        for k, v in condition_inputs().items()
    }
    kwargs["down_block_additional_residuals"] = tuple(
        r.to(dtype) for r in kwargs["down_block_additional_residuals"]
    )
    x = torch.randn(2, 4, 8, 8)
    eta = torch.randn_like(x)
    with torch.no_grad():
        out = loaded(x.to(dtype), 10, **kwargs, mixture_noise=eta.to(dtype)).sample
        reference = model.eval()(x, 10, **condition_inputs(), mixture_noise=eta).sample
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), reference, rtol=0.1, atol=0.1)


# ---------------------------------------------------------------- bad input


def test_wrapping_an_unsupported_model_names_the_argument():
    with pytest.raises(TypeError, match="`unet`.*UNet2DModel"):
        SMDUNet2DModel.from_unet(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="`unet`.*UNet2DConditionModel"):
        SMDUNet2DConditionModel.from_unet(tiny_unet())
    with pytest.raises(TypeError, match="`unet`.*UNet2DModel"):
        SMDUNet2DModel.from_unet(tiny_condition_unet())
    with pytest.raises(ValueError, match="`unet_config`"):
        SMDUNet2DModel()
    with pytest.raises(ValueError, match="`unet_config`.*UNet2DConditionModel"):
        SMDUNet2DModel(unet_config={**tiny_condition_unet().config, "_class_name": "UNet2DConditionModel"})


@pytest.mark.parametrize("latent_dim", [0, -3, 1.5])
def test_latent_dim_below_one_names_the_argument(latent_dim):
    with pytest.raises(ValueError, match="`latent_dim`"):
        SMDUNet2DModel.from_unet(tiny_unet(), latent_dim=latent_dim)


def test_bad_identifier_size_names_the_argument():
    with pytest.raises(ValueError, match="`identifier_norm_num_groups`"):
        SMDUNet2DModel.from_unet(
            tiny_unet(), identifier_block_out_channels=(6, 8), identifier_norm_num_groups=4
        )
    with pytest.raises(ValueError, match="`num_hypernet_layers`"):
        SMDUNet2DModel.from_unet(tiny_unet(), num_hypernet_layers=0)


def test_bad_forward_inputs_name_the_argument():
    model = SMDUNet2DModel.from_unet(tiny_unet(), latent_dim=5)
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="`mixture_noise`"):
        model(x, 1, mixture_noise=torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="`mixture_noise`"):
        model(x, 1, mixture_noise=torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="`sample`.*3"):
        model(torch.randn(2, 4, 8, 8), 1)
    with pytest.raises(ValueError, match="`sample`.*divisible"):
        model(torch.randn(2, 3, 7, 7), 1)


def test_deep_copy_hooks_its_own_mixture_modules():
    """Training code deep-copies models (EMA, teacher copies); the copy must use its own f_phi."""
    import copy

    model = SMDUNet2DModel.from_unet(tiny_unet(), latent_dim=5).eval()
    clone = copy.deepcopy(model)
    randomise_mixture_output_(clone)
    x, eta = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x, 3, mixture_noise=eta).sample, model.unet(x, 3).sample)
        assert not torch.allclose(clone(x, 3, mixture_noise=eta).sample, model.unet(x, 3).sample, atol=1e-3)
