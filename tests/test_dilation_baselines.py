"""Every baseline at the same interface and budget, on a Gaussian where the answer is exact (moments and
the normalising constant), plus the tempering building blocks against hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from diffusers_smd.dilation import (
    DilationPathPipeline,
    DilationPathScheduler,
    GaussianMixture,
    SamplerOutput,
    annealed_geometric_langevin,
    annealed_importance_sampling,
    mala,
    parallel_tempering,
    sequential_monte_carlo,
    ula,
)
from diffusers_smd.dilation.kernels import next_temperature
from diffusers_smd.dilation.tempering import communication_barrier_schedule

MEAN = torch.tensor([2.0, -1.0], dtype=torch.float64)
VAR = 0.25
LOG_Z = 3.0  # the test target's log density is log N(x; MEAN, VAR I) + 3, so Z = e^3


class ShiftedGaussian:
    """An unnormalised Gaussian with a closed-form score: log pi~ = log N(x; m, s^2 I) + LOG_Z."""

    dim = 2

    def __init__(self):
        self.normal = GaussianMixture(MEAN[None], covariances=VAR)

    def log_prob(self, x):
        return self.normal.log_prob(x) + LOG_Z

    def score(self, x):
        return self.normal.score(x)


SAMPLERS = [
    (ula, {}, 1 / (1 - 0.25)),  # ULA at s = 0.5 inflates the variance by 1 / (1 - s / 2)
    (mala, {}, 1.0),
    (annealed_geometric_langevin, {"num_levels": 4}, 1 / (1 - 0.25)),
    (sequential_monte_carlo, {"initial_scale": 3.0}, 1.0),
    (annealed_importance_sampling, {"initial_scale": 3.0}, 1.0),
    (parallel_tempering, {"initial_scale": 3.0}, 1.0),
]


@pytest.mark.parametrize(("sampler", "kwargs", "inflation"), SAMPLERS, ids=[s[0].__name__ for s in SAMPLERS])
def test_every_baseline_samples_a_gaussian_within_its_budget(sampler, kwargs, inflation):
    n, budget = 2000, 200
    out = sampler(
        ShiftedGaussian(), n, budget, torch.Generator().manual_seed(4), dtype=torch.float64, **kwargs
    )
    assert isinstance(out, SamplerOutput)
    assert out.samples.shape == (n, 2) and out.samples.dtype == torch.float64
    spent = out.num_gradient_evaluations + out.num_log_density_evaluations
    assert n * budget - 10 * n < spent <= n * budget  # the whole budget, never more
    torch.testing.assert_close(out.samples.mean(0), MEAN, atol=0.05, rtol=0)
    expected = torch.full((2,), VAR * inflation, dtype=torch.float64)
    torch.testing.assert_close(out.samples.var(0), expected, atol=0.035, rtol=0)


@pytest.mark.parametrize("sampler", [sequential_monte_carlo, annealed_importance_sampling])
def test_smc_and_ais_estimate_the_normalising_constant(sampler):
    """Both are unbiased for Z; with 1000 particles the spread of log Z_hat is a few hundredths (SMC's more:
    about 40 levels at a conditional ESS of 0.9, each adding ~0.1 / 1000 to the variance)."""
    errors = []
    for seed in range(3):
        out = sampler(
            ShiftedGaussian(),
            1000,
            300,
            torch.Generator().manual_seed(seed),
            dtype=torch.float64,
            initial_scale=3.0,
        )
        errors.append(out.log_Z - LOG_Z)
        assert 0 < out.effective_sample_size <= 1000
    assert abs(float(np.mean(errors))) < 0.05 and max(abs(e) for e in errors) < 0.12


def test_the_extension_estimates_the_normalising_constant_of_a_mixture():
    """Two modes with masses 0.2 and 0.8 and an unnormalised offset of 3: log Z = 3."""
    mixture = GaussianMixture(torch.tensor([[-5.0], [5.0]]), torch.tensor([0.2, 0.8]))

    class Offset:
        dim = 1

        def log_prob(self, x):
            return mixture.log_prob(x) + LOG_Z

    pipe = DilationPathPipeline(DilationPathScheduler())
    pipe.set_progress_bar_config(disable=True)
    out = pipe(Offset(), 1000, 20, torch.Generator().manual_seed(0), dtype=torch.float64, reweight_modes=True)
    assert abs(out.log_Z - LOG_Z) < 0.03
    assert out.effective_sample_size > 0.5 * 20 * 1000  # the default 20 proposals per sample
    plain = pipe(Offset(), 100, 5, torch.Generator().manual_seed(0))
    assert plain.log_Z is None and plain.effective_sample_size is None  # the plain path gives no estimate


def test_next_temperature_keeps_the_requested_ess():
    l_ratio = torch.randn(500, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    beta = next_temperature(l_ratio, 0.2, 0.5)
    w = torch.softmax((beta - 0.2) * l_ratio, 0)
    assert float(1 / (w * w).sum()) == pytest.approx(250.0, rel=1e-3)
    assert next_temperature(torch.ones(10), 0.3, 0.5) == 1.0  # a flat ratio costs no ESS: straight to 1
    # with non-uniform current weights the conditional ESS n (sum W w)^2 / sum W w^2 is what is kept
    log_weights = torch.linspace(-1, 1, 500, dtype=torch.float64)
    beta = next_temperature(l_ratio, 0.0, 0.7, log_weights)
    big_w, inc = torch.softmax(log_weights, 0), torch.exp(beta * l_ratio - (beta * l_ratio).max())
    assert float(500 * (big_w * inc).sum() ** 2 / (big_w * inc**2).sum()) == pytest.approx(350.0, rel=1e-3)


def test_communication_barrier_schedule_hand_computed():
    """Rejections 0.9 and 0.1 on [0, 0.5, 1]: Lambda = (0, 0.9, 1.0); the middle level Lambda = 0.5 lies 5/9
    of the way from beta 0 to 0.5, so the middle temperature moves to 0.2778."""
    new = communication_barrier_schedule(
        torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), torch.tensor([0.9, 0.1])
    )
    torch.testing.assert_close(new, torch.tensor([0.0, 0.5 * 5 / 9, 1.0], dtype=torch.float64))
    even = communication_barrier_schedule(
        torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64), torch.tensor([0.2, 0.2])
    )
    torch.testing.assert_close(even, torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64))


def test_parallel_tempering_moves_between_separated_modes():
    """Two modes 10 apart with masses 0.3 / 0.7: PT's replica swaps carry the weights, which a single MALA
    chain started between them cannot."""
    target = GaussianMixture(torch.tensor([[-5.0], [5.0]]), torch.tensor([0.3, 0.7]))
    out = parallel_tempering(
        target, 2000, 300, torch.Generator().manual_seed(1), dtype=torch.float64, initial_scale=6.0
    )
    left = float((out.samples < 0).double().mean())
    assert abs(left - 0.3) < 0.05
    assert 0.2 < out.acceptance_rate < 0.9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ess_fraction": 1.0}, "ess_fraction"),
        ({"num_mcmc_steps": 0}, "num_mcmc_steps"),
        ({"initial_scale": -1.0}, "initial_scale"),
    ],
)
def test_smc_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sequential_monte_carlo(ShiftedGaussian(), 10, 10, **kwargs)


def test_tempering_baselines_reject_bad_arguments_and_accept_numpy_integers():
    with pytest.raises(ValueError, match="num_replicas"):
        parallel_tempering(ShiftedGaussian(), 10, 10, num_replicas=1)
    with pytest.raises(ValueError, match="no round"):
        parallel_tempering(ShiftedGaussian(), 10, 1, num_replicas=10)
    with pytest.raises(ValueError, match="schedule_power"):
        annealed_importance_sampling(ShiftedGaussian(), 10, 10, schedule_power=0.0)
    with pytest.raises(ValueError, match="num_samples"):
        annealed_importance_sampling(ShiftedGaussian(), True, 10)
    with pytest.raises(ValueError, match="log density"):
        sequential_monte_carlo(type("ScoreOnly", (), {"dim": 2, "score": lambda self, x: -x})(), 10, 10)
    out = annealed_importance_sampling(ShiftedGaussian(), np.int64(20), np.int64(5))
    assert out.samples.shape == (20, 2)
    assert math.isfinite(out.log_Z)
