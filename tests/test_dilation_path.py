"""The dilation path's pure functions, the targets and the metrics, against closed forms."""

import math

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal, Normal

from diffusers_smd.dilation import (
    GaussianMixture,
    NealsFunnel,
    Rings,
    SecantCurvature,
    dilation_path_log_density,
    dilation_path_score,
    lambda_schedule,
    langevin_step,
    mode_weight_tv,
    rescale_to_target,
    secant_curvature,
    sliced_wasserstein2,
    typical_energy_window,
    validate_lambdas,
)
from diffusers_smd.dilation.path import within_energy_window


@pytest.fixture(autouse=True)
def _float64_by_default():
    """Closed-form comparisons in float64; restored after each test so other modules are unaffected."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _random_spd(d, gen):
    a = torch.randn(d, d, generator=gen)
    return a @ a.T / d + 0.5 * torch.eye(d)


def _torch_mixture(means, covs, weights):
    return MixtureSameFamily(Categorical(probs=weights), MultivariateNormal(means, covariance_matrix=covs))


@pytest.mark.parametrize("lam", [1e-3, 0.1, 0.7, 1.0])
def test_path_score_of_a_gaussian_is_the_closed_form(lam):
    gen = torch.Generator().manual_seed(0)
    d = 3
    m, s = torch.randn(d, generator=gen), _random_spd(d, gen)
    target = GaussianMixture(m[None], covariances=s[None])
    x = torch.randn(7, d, generator=gen)
    path = dilation_path_score(target.score(rescale_to_target(x, lam)), lam)
    # p_lambda = N(sqrt(lambda) m, lambda S): score -(lambda S)^{-1} (x - sqrt(lambda) m)
    expected = -torch.linalg.solve(lam * s, (x - math.sqrt(lam) * m).T).T
    torch.testing.assert_close(path, expected)


@pytest.mark.parametrize("lam", [1e-2, 0.3, 1.0])
def test_path_score_and_density_of_a_mixture_are_the_dilated_mixture(lam):
    gen = torch.Generator().manual_seed(1)
    k, d = 3, 2
    means = 4 * torch.randn(k, d, generator=gen)
    covs = torch.stack([_random_spd(d, gen) for _ in range(k)])
    weights = torch.tensor([0.2, 0.5, 0.3])
    target = GaussianMixture(means, weights, covs)
    dilated = _torch_mixture(math.sqrt(lam) * means, lam * covs, weights)  # independent closed form
    x = (math.sqrt(lam) * 3 * torch.randn(11, d, generator=gen)).requires_grad_(True)
    (expected_score,) = torch.autograd.grad(dilated.log_prob(x).sum(), x)
    y = rescale_to_target(x.detach(), lam)
    torch.testing.assert_close(dilation_path_score(target.score(y), lam), expected_score)
    torch.testing.assert_close(
        dilation_path_log_density(target.log_prob(y), lam, d), dilated.log_prob(x.detach())
    )


def test_langevin_step_is_euler_maruyama():
    x, s, xi = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 4.0]]), torch.tensor([[0.3, -0.1]])
    out = langevin_step(x, s, 0.02, xi)
    torch.testing.assert_close(out, torch.tensor([[1.0 + 0.01 + 0.2 * 0.3, -2.0 + 0.08 - 0.2 * 0.1]]))
    per_row = langevin_step(torch.zeros(2, 1), torch.ones(2, 1), torch.tensor([0.5, 2.0]), torch.zeros(2, 1))
    torch.testing.assert_close(per_row, torch.tensor([[0.5], [2.0]]))


def test_lambda_schedules():
    geo = lambda_schedule(5, 1e-4, "geometric")
    torch.testing.assert_close(geo, torch.tensor([1e-4, 1e-3, 1e-2, 1e-1, 1.0]))
    lin = lambda_schedule(3, 0.1, "linear")
    torch.testing.assert_close(lin, torch.tensor([0.1, 0.55, 1.0]))
    assert lambda_schedule(1, 0.1).tolist() == [1.0]


@pytest.mark.parametrize(
    ("lambdas", "message"),
    [
        ([0.5, 0.2, 1.0], "increasing"),
        ([0.1, 0.1, 1.0], "increasing"),
        ([0.0, 0.5, 1.0], r"\(0, 1\]"),
        ([-0.1, 1.0], r"\(0, 1\]"),
        ([0.5, 1.5], r"\(0, 1\]"),
        ([0.1, 0.5], "end at 1"),
        ([], "empty"),
        ([0.1, float("nan"), 1.0], "finite"),
    ],
)
def test_bad_lambda_schedules_are_rejected(lambdas, message):
    with pytest.raises(ValueError, match=message):
        validate_lambdas(lambdas)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="shape"):
        lambda_schedule(4, 1e-3, "cosine")
    with pytest.raises(ValueError, match="lambda_min"):
        lambda_schedule(4, 0.0)
    with pytest.raises(ValueError, match="num_levels"):
        lambda_schedule(0, 1e-3)


def test_secant_curvature_is_the_inverse_variance_on_a_gaussian():
    sigma2 = 0.25
    target = GaussianMixture(torch.tensor([[1.0, 2.0]]), covariances=sigma2)
    gen = torch.Generator().manual_seed(0)
    y0, y1 = torch.randn(5, 2, generator=gen), torch.randn(5, 2, generator=gen)
    c = secant_curvature(y1, target.score(y1), y0, target.score(y0))
    torch.testing.assert_close(c, torch.full((5,), 1 / sigma2))
    tracker = SecantCurvature(initial_curvature=1.0, min_curvature=1e-3, momentum=0.9)
    assert tracker.update(y0, target.score(y0)).tolist() == [1.0] * 5  # no secant yet
    torch.testing.assert_close(
        tracker.update(y1, target.score(y1)), torch.full((5,), 1 / sigma2)
    )  # rises at once


@pytest.mark.parametrize(
    "target",
    [
        GaussianMixture(
            torch.tensor([[0.0, 0.0, 0.0], [3.0, -1.0, 2.0]]), [0.3, 0.7], torch.tensor([0.5, 2.0])
        ),
        GaussianMixture(
            torch.tensor([[0.0, 1.0], [3.0, -1.0]]),
            None,
            torch.tensor([[[1.0, 0.3], [0.3, 0.5]], [[2.0, 0], [0, 1.0]]]),
        ),
        NealsFunnel(dim=4),
        Rings(radii=(1.0, 3.0), width=0.4, weights=(0.3, 0.7)),
    ],
)
def test_target_scores_equal_autograd_of_their_log_density(target):
    x = torch.randn(9, target.dim, generator=torch.Generator().manual_seed(3)) * 2 + 0.1
    xg = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(target.log_prob(xg).sum(), xg)
    torch.testing.assert_close(target.score(x), expected)


def test_mixture_log_density_is_normalised_against_torch_distributions():
    gen = torch.Generator().manual_seed(4)
    means, covs, w = (
        torch.randn(3, 2, generator=gen),
        torch.stack([_random_spd(2, gen) for _ in range(3)]),
        torch.tensor([0.1, 0.6, 0.3]),
    )
    x = torch.randn(6, 2, generator=gen)
    torch.testing.assert_close(
        GaussianMixture(means, w, covs).log_prob(x), _torch_mixture(means, covs, w).log_prob(x)
    )


def test_funnel_log_density_against_torch_distributions():
    f = NealsFunnel(dim=3, scale=3.0)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(5))
    v = x[:, 0]
    expected = Normal(0.0, 3.0).log_prob(v) + Normal(0.0, torch.exp(v / 2)[:, None]).log_prob(x[:, 1:]).sum(1)
    torch.testing.assert_close(f.log_prob(x), expected)


def test_rings_density_integrates_to_one():
    rings = Rings(radii=(1.0, 3.0), width=0.3, weights=(0.4, 0.6))
    t = torch.linspace(-5, 5, 801)
    xx, yy = torch.meshgrid(t, t, indexing="ij")
    p = rings.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp()
    assert abs(float(p.sum() * (t[1] - t[0]) ** 2) - 1.0) < 1e-3


def test_exact_samplers_moments():
    gen = torch.Generator().manual_seed(6)
    n = 40000
    means, w = torch.tensor([[-2.0, 0.0], [3.0, 1.0]]), torch.tensor([0.25, 0.75])
    covs = torch.stack([torch.eye(2) * 0.5, torch.tensor([[1.0, 0.4], [0.4, 0.8]])])
    gm = GaussianMixture(means, w, covs)
    x = gm.sample(n, gen)
    mean = (w[:, None] * means).sum(0)
    cov = (w[:, None, None] * (covs + means[:, :, None] * means[:, None, :])).sum(0) - mean[:, None] * mean[
        None
    ]
    torch.testing.assert_close(x.mean(0), mean, atol=0.04, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.08, rtol=0)
    torch.testing.assert_close(gm.mode_weights_of(x), w, atol=0.01, rtol=0)

    f = NealsFunnel(dim=3, scale=3.0).sample(n, gen)
    assert abs(f[:, 0].mean()) < 0.06 and abs(f[:, 0].std() - 3.0) < 0.05
    # x_1 / exp(v / 2) is standard normal
    z = f[:, 1] / torch.exp(f[:, 0] / 2)
    assert abs(z.std() - 1.0) < 0.02

    rings = Rings(radii=(1.0, 3.0), width=0.3, weights=(0.4, 0.6))
    r = rings.sample(n, gen).norm(dim=1)
    grid = torch.linspace(1e-6, 6, 20001)
    for k, rk in enumerate((1.0, 3.0)):
        dens = grid * torch.exp(-((grid - rk) ** 2) / (2 * 0.09))
        expected_mean = float((grid * dens).sum() / dens.sum())
        members = r[(r - rk).abs() < 1.0]
        assert abs(members.mean() - expected_mean) < 0.01, k
    frac_inner = float((r < 2.0).double().mean())
    assert abs(frac_inner - 0.4) < 0.01


def test_mode_weight_tv_and_sliced_wasserstein():
    assert mode_weight_tv(torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.2, 0.3, 0.5])) == pytest.approx(0.5)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(500, 4, generator=gen)
    shift = torch.tensor([2.0, 0.0, 0.0, 0.0])
    # equal point clouds up to a shift a: SW2^2 = E_theta (theta . a)^2 = |a|^2 / d (Monte Carlo over theta)
    sw = sliced_wasserstein2(x, x + shift, num_projections=3000, generator=gen)
    assert sw == pytest.approx(2.0 / 2.0, rel=0.06)
    assert sliced_wasserstein2(x, x) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        mode_weight_tv(torch.ones(2), torch.ones(3))


@pytest.mark.parametrize("dim", [1, 2, 10, 50])
def test_typical_energy_window_is_the_mean_plus_k_sd_of_a_gaussian_modes_energy(dim):
    """A Gaussian mode's own samples sit chi^2_d / 2 nats below its top (scipy's chi^2 moments)."""
    from scipy.stats import chi2

    for k in (0.0, 2.0):
        expected = chi2(dim).mean() / 2 + k * chi2(dim).std() / 2
        assert typical_energy_window(dim, k) == pytest.approx(expected, rel=1e-12)
    # whatever the covariance: the energies of N(m, S) samples below the top, against the window
    gen = torch.Generator().manual_seed(0)
    cov = torch.diag(torch.linspace(0.01, 100.0, dim, dtype=torch.float64))
    mode = MultivariateNormal(torch.zeros(dim, dtype=torch.float64), cov)
    samples = torch.randn(20000, dim, generator=gen, dtype=torch.float64) * cov.diagonal().sqrt()
    energy = mode.log_prob(torch.zeros(1, dim, dtype=torch.float64)) - mode.log_prob(samples)
    inside = (energy < typical_energy_window(dim, 2.0)).double().mean()
    assert float(inside) == pytest.approx(chi2(dim).cdf(2 * typical_energy_window(dim, 2.0)), abs=0.01)


def test_within_energy_window_by_hand():
    log_density = torch.tensor([0.0, -2.9, -3.0, -7.0])
    assert within_energy_window(log_density, 0.0, 3.0).tolist() == [True, True, False, False]
    assert within_energy_window(log_density, -4.0, 3.0).tolist() == [True, True, True, False]
