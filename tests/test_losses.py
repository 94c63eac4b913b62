import math
from dataclasses import dataclass

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.utils import BaseOutput

from diffusers_smd.losses import (
    SMDMixtureObjective,
    build_objective,
    gaussian_posterior_coefficients,
    gaussian_posterior_mean,
    original_sample_error_scale,
    original_sample_from_prediction,
    scaled_mixture_nll,
    training_timestep_grid,
)

# ----------------------------------------------------------------------------------------------------
# test doubles


@dataclass
class _Out(BaseOutput):
    sample: torch.Tensor


class RecordingModel(torch.nn.Module):
    """A plain (non-SMD) model: output = weight * sample; records what it receives."""

    def __init__(self, weight: float = 0.5):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(weight))
        self.calls = []

    def forward(self, sample, timestep, class_labels=None, return_dict=True):
        self.calls.append(
            {"sample": sample.detach().clone(), "timestep": timestep.clone(), "class_labels": class_labels}
        )
        return _Out(self.weight * sample)


class EtaBlindModel(RecordingModel):
    """Accepts the SMD arguments but ignores eta (every mixture component is the same)."""

    def forward(self, sample, timestep, return_dict=True, *, mixture_noise=None, generator=None):
        return super().forward(sample, timestep)


class EtaModel(torch.nn.Module):
    """An SMD-style test double: output = scale * eta + offset, eta drawn from `generator` like SMD models."""

    def __init__(self, scale: float = 1.0, offset: float = 0.0):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale))
        self.offset = offset
        self.etas = []
        self.timesteps = []

    def forward(self, sample, timestep, return_dict=True, *, mixture_noise=None, generator=None):
        if mixture_noise is None:
            mixture_noise = torch.randn(sample.shape, generator=generator)
        self.etas.append(mixture_noise)
        self.timesteps.append(timestep.clone())
        return _Out(self.scale * mixture_noise + self.offset)


def scheduler(prediction_type="epsilon", num_train_timesteps=10, **kwargs):
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        clip_sample=False,
        **kwargs,
    )


# ----------------------------------------------------------------------------------------------------
# pure math


def test_posterior_coefficients_match_hand_formula():
    c_x0, c_xt, var = gaussian_posterior_coefficients(torch.tensor(0.5), torch.tensor(0.8))
    # alpha_{t|s} = 0.625, beta_{t|s} = 0.375
    assert c_x0.item() == pytest.approx(math.sqrt(0.8) * 0.375 / 0.5, rel=1e-6)
    assert c_xt.item() == pytest.approx(math.sqrt(0.625) * 0.2 / 0.5, rel=1e-6)
    assert var.item() == pytest.approx(0.2 / 0.5 * 0.375, rel=1e-6)
    # last step: abar_s = 1 -> mean is x_0, no variance
    c_x0, c_xt, var = gaussian_posterior_coefficients(torch.tensor(0.3), torch.tensor(1.0))
    assert (c_x0.item(), c_xt.item(), var.item()) == pytest.approx((1.0, 0.0, 0.0), abs=1e-7)


def test_posterior_mean_and_variance_match_ddpm_step_on_coarse_grid():
    """DDPMScheduler.step on a 5-step grid jumps t -> t - T/n; our mean/variance must be what it samples."""
    sched = DDPMScheduler(num_train_timesteps=100, prediction_type="sample", clip_sample=False)
    sched.set_timesteps(5)
    x0, xt = torch.randn(3, 4), torch.randn(3, 4)
    t = int(sched.timesteps[1])
    prev = int(sched.timesteps[2])
    step = sched.step(x0, t, xt, generator=torch.Generator().manual_seed(7)).prev_sample
    noise = torch.randn(xt.shape, generator=torch.Generator().manual_seed(7))
    abar_t, abar_s = sched.alphas_cumprod[t], sched.alphas_cumprod[prev]
    mean = gaussian_posterior_mean(x0, xt, abar_t, abar_s)
    _, _, var = gaussian_posterior_coefficients(abar_t, abar_s)
    torch.testing.assert_close(step, mean + var.sqrt() * noise, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_original_sample_matches_ddpm_step_and_error_scale(prediction_type):
    sched = DDPMScheduler(num_train_timesteps=50, prediction_type=prediction_type, clip_sample=False)
    t = 31
    xt, output = torch.randn(2, 5), torch.randn(2, 5)
    expected = sched.step(output, t, xt, generator=torch.Generator().manual_seed(0)).pred_original_sample
    abar = sched.alphas_cumprod[t]
    ours = original_sample_from_prediction(output, xt, abar, prediction_type)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    # |d x0_hat / d prediction| = r_t, checked by a finite difference
    delta = 1e-2
    moved = original_sample_from_prediction(output + delta, xt, abar, prediction_type)
    ratio = ((moved - ours).abs() / delta).mean()
    assert ratio.item() == pytest.approx(original_sample_error_scale(abar, prediction_type).item(), rel=1e-3)


def test_unknown_prediction_type_is_rejected():
    with pytest.raises(ValueError, match="prediction_type"):
        original_sample_from_prediction(torch.zeros(1), torch.zeros(1), torch.tensor(0.5), "flow")


def test_scaled_mixture_nll_matches_explicit_gaussian_mixture():
    torch.manual_seed(0)
    batch, k, dims = 3, 4, 2
    x = torch.randn(batch, dims, dtype=torch.float64)
    means = torch.randn(batch, k, dims, dtype=torch.float64)
    variance = torch.tensor([0.3, 1.5, 0.05], dtype=torch.float64)
    q = (x[:, None] - means).pow(2).sum(-1)
    std = variance.sqrt()[:, None, None].expand(batch, k, dims)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=torch.full((batch, k), 1.0 / k, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(means, std), 1),
    )
    log_density = mixture.log_prob(x)
    expected = -2 * variance * (log_density + dims / 2 * torch.log(2 * math.pi * variance))
    torch.testing.assert_close(scaled_mixture_nll(q, variance), expected)


def test_scaled_mixture_nll_zero_variance_is_min_and_the_limit():
    q = torch.tensor([[4.0, 1.0, 9.0], [0.5, 0.25, 3.0]])
    assert scaled_mixture_nll(q, torch.zeros(2)).tolist() == [1.0, 0.25]
    near = scaled_mixture_nll(q, torch.full((2,), 1e-4))
    torch.testing.assert_close(near, torch.tensor([1.0, 0.25]), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="shape"):
        scaled_mixture_nll(q, torch.zeros(3))


def test_timestep_grid_training_and_coarse():
    sched = DDPMScheduler(num_train_timesteps=1000)
    t, prev = training_timestep_grid(sched)
    assert t.tolist() == list(range(999, -1, -1)) and prev.tolist() == list(range(998, -2, -1))
    t, prev = training_timestep_grid(sched, 10)
    assert t.tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert prev.tolist() == [800, 700, 600, 500, 400, 300, 200, 100, 0, -1]
    assert sched.num_inference_steps is None  # the caller's scheduler is untouched


# ----------------------------------------------------------------------------------------------------
# objectives


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_vanilla_loss_is_mse_to_the_target(prediction_type):
    sched = scheduler(prediction_type)
    model = RecordingModel(0.5)
    x0 = torch.randn(6, 3)
    loss = build_objective("vanilla")(model, sched, x0, generator=torch.Generator().manual_seed(1))
    assert loss.shape == (6,)
    call = model.calls[0]
    xt, t = call["sample"], call["timestep"]
    abar = sched.alphas_cumprod[t][:, None]
    eps = (xt - abar.sqrt() * x0) / (1 - abar).sqrt()  # the noise, recovered from x_t by hand
    target = {"epsilon": eps, "v_prediction": abar.sqrt() * eps - (1 - abar).sqrt() * x0, "sample": x0}[
        prediction_type
    ]
    torch.testing.assert_close(loss, ((0.5 * xt - target) ** 2).mean(1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_min_snr_weighting(prediction_type):
    sched = scheduler(prediction_type)
    x0 = torch.randn(8, 3)
    model = RecordingModel()
    plain = build_objective("vanilla")(model, sched, x0, generator=torch.Generator().manual_seed(3))
    weighted = build_objective("vanilla", snr_gamma=2.0)(
        model, sched, x0, generator=torch.Generator().manual_seed(3)
    )
    abar = sched.alphas_cumprod[model.calls[0]["timestep"]]
    snr = abar / (1 - abar)
    weight = torch.minimum(snr, torch.tensor(2.0))
    weight = {"epsilon": weight / snr, "v_prediction": weight / (snr + 1), "sample": weight}[prediction_type]
    torch.testing.assert_close(weighted, plain * weight, rtol=1e-5, atol=1e-6)


class ShiftedTimestepScheduler(DDPMScheduler):
    """Test double for an E-TSDM scheduler: conditions the network on t // 4 * 4."""

    def condition_timesteps(self, timesteps):
        return timesteps // 4 * 4


@pytest.mark.parametrize("name", ["vanilla", "smd", "smd-mixture"])
def test_objectives_condition_on_condition_timesteps_but_noise_with_real_t(name):
    sched = ShiftedTimestepScheduler(
        num_train_timesteps=20, beta_schedule="squaredcos_cap_v2", clip_sample=False
    )
    x0 = torch.randn(16, 2)
    received = []

    class Model(EtaModel):
        def forward(self, sample, timestep, return_dict=True, *, mixture_noise=None, generator=None):
            received.append((sample.detach(), timestep.clone()))
            return super().forward(sample, timestep, mixture_noise=mixture_noise, generator=generator)

    g = torch.Generator().manual_seed(0)
    build_objective(name)(Model(), sched, x0, generator=g)
    # replay the objective's first draws (timesteps, then noise) to know the real t
    replay = torch.Generator().manual_seed(0)
    real_t = torch.arange(19, -1, -1)[torch.randint(0, 20, (16,), generator=replay)]
    noise = torch.randn(x0.shape, generator=replay)
    sample, timestep = received[0]
    k = sample.shape[0] // 16
    assert torch.equal(timestep, torch.cat([real_t // 4 * 4] * k))
    torch.testing.assert_close(sample, torch.cat([sched.add_noise(x0, noise, real_t)] * k))
    assert not torch.equal(real_t // 4 * 4, real_t)  # the test would not notice otherwise


@pytest.mark.parametrize("name", ["vanilla", "smd", "smd-mixture"])
def test_objectives_with_a_real_etsdm_scheduler(name):
    from diffusers_smd.schedulers import ETSDMDDPMScheduler

    sched = ETSDMDDPMScheduler(
        num_train_timesteps=100,
        etsdm_threshold=50,
        etsdm_intervals=5,
        prediction_type="sample",
        clip_sample=False,
    )
    x0 = torch.randn(64, 2)
    model = EtaModel()
    objective = build_objective(name, num_inference_steps=20)
    objective(model, sched, x0, generator=torch.Generator().manual_seed(0))
    replay = torch.Generator().manual_seed(0)
    real_grid = torch.arange(95, -1, -5)  # DDPM "leading" spacing of 20 steps on T = 100
    real_t = real_grid[torch.randint(0, 20, (64,), generator=replay)]
    k = model.timesteps[0].shape[0] // 64
    expected_condition = torch.where(real_t >= 50, real_t, real_t // 10 * 10)  # width 50 / 5 = 10
    assert torch.equal(model.timesteps[0], torch.cat([expected_condition] * k))
    assert not torch.equal(expected_condition, real_t)


def test_smd_needs_an_smd_model_and_is_reproducible_with_generator():
    sched = scheduler("sample")
    x0 = torch.randn(5, 2)
    with pytest.raises(TypeError, match="mixture_noise"):
        build_objective("smd")(RecordingModel(), sched, x0)
    first = build_objective("smd")(EtaModel(), sched, x0, generator=torch.Generator().manual_seed(4))
    again = build_objective("smd")(EtaModel(), sched, x0, generator=torch.Generator().manual_seed(4))
    other = build_objective("smd")(EtaModel(), sched, x0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_mixture_last_step_is_best_of_k_reconstruction():
    """One-step schedule (T = 1): sigma = 0, the loss is min_k ||x0_hat_k - x0||^2 / D (prediction_type sample)."""
    sched = DDPMScheduler(
        num_train_timesteps=1, trained_betas=[0.999], prediction_type="sample", clip_sample=False
    )
    x0 = torch.randn(7, 3)
    model = EtaModel()
    loss = build_objective("smd-mixture", num_mixture_samples=5)(
        model, sched, x0, generator=torch.Generator().manual_seed(0)
    )
    etas = model.etas[0].reshape(5, 7, 3)
    expected = ((etas - x0) ** 2).mean(-1).min(0).values
    torch.testing.assert_close(loss, expected)
    # K = 1 is then exactly the vanilla MSE
    model = EtaBlindModel()
    one = build_objective("smd-mixture", num_mixture_samples=1)(
        model, sched, x0, generator=torch.Generator().manual_seed(2)
    )
    vanilla = build_objective("vanilla")(model, sched, x0, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(one, vanilla)


def mixture_loss_by_hand(sched, prediction_type, x0, t, prev, noise, output, xi):
    """Eq. 1-2 of SMDMixtureObjective with torch.distributions, in float64: per-example loss and sigma_t^2.

    ``output`` (K, B, D) is the network's output per component; ``prev`` the previous grid step (-1: x_0).
    """
    k, batch, dims = output.shape
    abar_t = sched.alphas_cumprod[t][:, None].double()
    abar_s = torch.where(prev >= 0, sched.alphas_cumprod[prev.clamp(min=0)], torch.ones(())).double()[:, None]
    xt = abar_t.sqrt() * x0 + (1 - abar_t).sqrt() * noise
    output = output.double()
    if prediction_type == "epsilon":
        x0_hat = (xt - (1 - abar_t).sqrt() * output) / abar_t.sqrt()
        r = ((1 - abar_t) / abar_t).sqrt()
    elif prediction_type == "v_prediction":
        x0_hat = abar_t.sqrt() * xt - (1 - abar_t).sqrt() * output
        r = (1 - abar_t).sqrt()
    else:
        x0_hat, r = output, torch.ones_like(abar_t)
    beta = 1 - abar_t / abar_s
    c = abar_s.sqrt() * beta / (1 - abar_t)
    d = (abar_t / abar_s).sqrt() * (1 - abar_s) / (1 - abar_t)
    var = (1 - abar_s) / (1 - abar_t) * beta
    x_prev = c * x0 + d * xt + var.sqrt() * xi
    mu = (c * x0_hat + d * xt).transpose(0, 1)  # (B, K, D)
    expected = []
    for b in range(batch):
        if var[b] > 0:
            mixture = torch.distributions.MixtureSameFamily(
                torch.distributions.Categorical(probs=torch.full((k,), 1.0 / k, dtype=torch.float64)),
                torch.distributions.Independent(
                    torch.distributions.Normal(mu[b], var[b].sqrt().expand(k, dims)), 1
                ),
            )
            nll = -mixture.log_prob(x_prev[b]) - dims / 2 * torch.log(2 * math.pi * var[b])
            value = (2 * var[b] * nll - var[b] * xi[b].pow(2).sum()) / (dims * c[b] ** 2 * r[b] ** 2)
        else:
            value = (x_prev[b] - mu[b]).pow(2).sum(-1).min() / (dims * c[b] ** 2 * r[b] ** 2)
        expected.append(value.squeeze())
    return torch.stack(expected), var.squeeze(1)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_mixture_loss_is_the_mixture_likelihood_of_x_prev(prediction_type):
    """Eq. 1-2 of SMDMixtureObjective, recomputed with torch.distributions from replayed random draws."""
    sched = scheduler(prediction_type, num_train_timesteps=8)
    batch, k, dims = 6, 3, 2
    x0 = torch.randn(batch, dims)
    model = EtaModel(scale=0.7, offset=0.1)
    loss = SMDMixtureObjective(num_mixture_samples=k)(
        model, sched, x0, generator=torch.Generator().manual_seed(11)
    )

    replay = torch.Generator().manual_seed(11)
    t = torch.arange(7, -1, -1)[torch.randint(0, 8, (batch,), generator=replay)]
    noise = torch.randn(x0.shape, generator=replay)
    eta = torch.randn((k * batch, dims), generator=replay)
    xi = torch.randn(x0.shape, generator=replay)
    torch.testing.assert_close(eta, model.etas[0])
    output = (0.7 * eta + 0.1).reshape(k, batch, dims)
    expected, var = mixture_loss_by_hand(sched, prediction_type, x0, t, t - 1, noise, output, xi)
    assert (var > 0).sum() >= 3 and (var == 0).sum() >= 1  # both regimes appear in this draw
    torch.testing.assert_close(loss.double(), expected, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_mixture_loss_on_the_coarse_sampling_grid_is_the_likelihood_of_the_jump(prediction_type):
    """num_inference_steps=4 on 100 training steps: t in {75, 50, 25, 0}, each paired with t - 25 (x_0 after 0).

    The grid is written out by hand (diffusers' "leading" spacing); the loss is recomputed from replayed draws.
    """
    sched = DDPMScheduler(num_train_timesteps=100, prediction_type=prediction_type, clip_sample=False)
    batch, k, dims = 12, 3, 2
    x0 = torch.randn(batch, dims, generator=torch.Generator().manual_seed(3))
    model = EtaModel(scale=0.6, offset=-0.2)
    loss = SMDMixtureObjective(num_mixture_samples=k, num_inference_steps=4)(
        model, sched, x0, generator=torch.Generator().manual_seed(12)
    )

    replay = torch.Generator().manual_seed(12)
    grid, previous = torch.tensor([75, 50, 25, 0]), torch.tensor([50, 25, 0, -1])
    index = torch.randint(0, 4, (batch,), generator=replay)
    t, prev = grid[index], previous[index]
    noise = torch.randn(x0.shape, generator=replay)
    eta = torch.randn((k * batch, dims), generator=replay)
    xi = torch.randn(x0.shape, generator=replay)
    assert torch.equal(model.timesteps[0], torch.cat([t] * k))  # the network saw the grid's t
    torch.testing.assert_close(eta, model.etas[0])
    output = (0.6 * eta - 0.2).reshape(k, batch, dims)
    expected, var = mixture_loss_by_hand(sched, prediction_type, x0, t, prev, noise, output, xi)
    assert len(set(t.tolist())) >= 3 and (var == 0).any() and (var > 0).any()  # jumps of 25 and the last step
    torch.testing.assert_close(loss.double(), expected, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("num_steps", [1, 3])
def test_mixture_without_posterior_noise_is_a_soft_min_of_x0_errors(num_steps):
    """posterior_noise=False: -tau log mean_k exp(-|x0_hat_k - x0|^2 / tau) / D, tau = 2 sigma^2 / c^2 (x0 units)."""
    sched = scheduler("sample", num_train_timesteps=num_steps)
    batch, k, dims = 8, 3, 2
    x0 = torch.randn(batch, dims)
    model = EtaModel(scale=0.8)
    objective = build_objective("smd-mixture", num_mixture_samples=k, posterior_noise=False)
    loss = objective(model, sched, x0, generator=torch.Generator().manual_seed(5))
    t = model.timesteps[0][:batch]
    prev = t - 1
    abar_t = sched.alphas_cumprod[t].double()
    abar_s = torch.where(prev >= 0, sched.alphas_cumprod[prev.clamp(min=0)], torch.ones(())).double()
    beta = 1 - abar_t / abar_s
    c = abar_s.sqrt() * beta / (1 - abar_t)
    var = (1 - abar_s) / (1 - abar_t) * beta
    errors = (0.8 * model.etas[0].reshape(k, batch, dims).double() - x0).pow(2).sum(-1)  # (K, B)
    tau = 2 * var / c**2
    soft = -tau * (torch.logsumexp(-errors / tau.clamp(min=1e-30), 0) - math.log(k))
    expected = torch.where(var > 0, soft, errors.min(0).values) / dims
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-6)
    again = objective(EtaModel(scale=0.8), sched, x0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(loss, again)  # deterministic given the same draws of t, noise and eta


def test_mixture_with_one_component_equals_vanilla_in_expectation():
    """K = 1: loss - vanilla = 2 sigma_t e.xi / (D c_t r_t^2), zero-mean over xi (0 on the last step).

    Seeded throughout. The bound is 4 standard errors of the mean difference (a two-sided normal tail of
    6e-5), and the sample is large enough that 4 standard errors are below 5% of the vanilla loss, so the test
    can tell "equal in expectation" from a 5% bias.
    """
    sched = scheduler("v_prediction", num_train_timesteps=4)
    x0 = torch.randn(40_000, 2, generator=torch.Generator().manual_seed(1))
    model = EtaBlindModel(0.3)
    mixture = build_objective("smd-mixture", num_mixture_samples=1)(
        model, sched, x0, generator=torch.Generator().manual_seed(0)
    )
    vanilla = build_objective("vanilla")(model, sched, x0, generator=torch.Generator().manual_seed(0))
    difference = (mixture - vanilla).double()
    assert difference.abs().max() > 1e-3  # the cross term is there: not equal sample by sample
    standard_error = difference.std().item() / math.sqrt(len(difference))
    assert 4 * standard_error < 0.05 * vanilla.double().mean().item()
    assert abs(difference.mean().item()) < 4 * standard_error


def test_coarse_grid_and_conditioning_are_passed_through():
    sched = DDPMScheduler(num_train_timesteps=100, prediction_type="sample", clip_sample=False)
    received = {}

    class Model(torch.nn.Module):
        def forward(
            self, sample, timestep, class_labels=None, return_dict=True, *, mixture_noise=None, generator=None
        ):
            received.update(timestep=timestep, class_labels=class_labels)
            return _Out(sample * 0)

    labels = torch.arange(10)
    loss = build_objective("smd-mixture", num_mixture_samples=3, num_inference_steps=4)(
        Model(),
        sched,
        torch.randn(10, 2),
        {"class_labels": labels},
        generator=torch.Generator().manual_seed(0),
    )
    assert loss.shape == (10,) and torch.isfinite(loss).all()
    assert set(received["timestep"].tolist()) <= {75, 50, 25, 0}
    assert torch.equal(received["class_labels"], torch.cat([labels] * 3))


def test_gradients_reach_the_model():
    sched = scheduler("epsilon")
    for name in ("vanilla", "smd", "smd-mixture"):
        model = EtaModel()
        build_objective(name)(model, sched, torch.randn(8, 2)).mean().backward()
        assert model.scale.grad is not None and model.scale.grad.abs() > 0


def test_bad_input_is_rejected_with_clear_messages():
    sched = scheduler()
    with pytest.raises(ValueError, match="vanilla"):
        build_objective("l2")
    with pytest.raises(TypeError, match="num_mixture_samples"):
        build_objective("vanilla", num_mixture_samples=4)
    with pytest.raises(ValueError, match="num_mixture_samples"):
        build_objective("smd-mixture", num_mixture_samples=0)
    with pytest.raises(TypeError, match="posterior_noise"):
        build_objective("smd-mixture", posterior_noise="no")
    with pytest.raises(ValueError, match="snr_gamma"):
        build_objective("smd", snr_gamma=-1.0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        build_objective("vanilla", num_inference_steps=0)
    objective = build_objective("vanilla")
    with pytest.raises(ValueError, match="conditioning"):
        objective(RecordingModel(), sched, torch.randn(2, 2), {"timestep": 3})
    with pytest.raises(TypeError, match="clean_batch"):
        objective(RecordingModel(), sched, torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="noise_scheduler"):
        objective(RecordingModel(), object(), torch.randn(2, 2))

    class Doubling(torch.nn.Module):
        def forward(self, sample, timestep):
            return _Out(torch.cat([sample, sample], dim=1))

    with pytest.raises(ValueError, match="shape"):
        objective(Doubling(), sched, torch.randn(2, 2))


def test_offset_noise_adds_a_per_channel_constant_drawn_after_eps():
    """eps' = eps + offset * n, n ~ N(0, 1) of shape (B, C, 1, 1), as diffusers' --noise_offset."""
    sched = scheduler("epsilon")
    x0 = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))

    class Zero(torch.nn.Module):
        def forward(self, sample, timestep, return_dict=True):
            return _Out(torch.zeros_like(sample))

    loss = build_objective("vanilla", noise_offset=0.3)(
        Zero(), sched, x0, generator=torch.Generator().manual_seed(7)
    )
    generator = torch.Generator().manual_seed(7)
    torch.randint(0, 10, (3,), generator=generator)  # the timesteps
    eps = torch.randn(x0.shape, generator=generator)
    offset = torch.randn(3, 2, 1, 1, generator=generator)
    expected = ((eps + 0.3 * offset) ** 2).flatten(1).mean(dim=1)  # target eps', prediction 0
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="noise_offset"):
        build_objective("vanilla", noise_offset=-0.1)


def test_mixture_repeats_nested_per_example_conditioning():
    """SDXL passes added_cond_kwargs (a dict of per-example tensors): each is repeated K times like the batch."""
    received = {}

    class Model(torch.nn.Module):
        def forward(self, sample, timestep, added_cond_kwargs=None, return_dict=True, *, mixture_noise=None,
                    generator=None):  # fmt: skip
            received.update(added_cond_kwargs)
            return _Out(sample * 0)

    embeds, ids = torch.arange(6.0).reshape(2, 3), torch.tensor([[1.0], [2.0]])
    conditioning = {"added_cond_kwargs": {"text_embeds": embeds, "time_ids": ids}}
    build_objective("smd-mixture", num_mixture_samples=3)(
        Model(),
        scheduler("sample"),
        torch.randn(2, 2),
        conditioning,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(received["text_embeds"], torch.cat([embeds] * 3))
    assert torch.equal(received["time_ids"], torch.cat([ids] * 3))
