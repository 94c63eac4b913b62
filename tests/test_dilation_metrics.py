"""Sampling metrics against closed forms and hand-computed cases."""

import math

import pytest
import torch

from diffusers_smd.dilation import (
    count_modes_found,
    effective_sample_size,
    entropic_wasserstein2,
    maximum_mean_discrepancy,
    sliced_ks_distance,
    wasserstein2,
)


def _cloud(n, d, seed, scale=1.0):
    return scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_wasserstein_of_a_translated_cloud_is_the_translation():
    """For the squared cost, moving every point by a is optimal: W2(x, x + a) = |a| exactly."""
    x = _cloud(200, 3, 0, scale=5.0)
    a = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert wasserstein2(x, x + a) == pytest.approx(float(a.norm()), rel=1e-9)
    # entropic: the blur of reg = 0.05 is negligible against point spacings of ~1
    assert entropic_wasserstein2(x, x + a) == pytest.approx(float(a.norm()), rel=0.02)


def test_entropic_wasserstein_grows_with_the_regularisation_and_tends_to_the_exact_one():
    """<P_reg, C> is increasing in reg (the plan spreads) and equals the OT cost as reg -> 0."""
    x, y = _cloud(80, 2, 1), _cloud(80, 2, 2) + 0.5
    exact = wasserstein2(x, y)
    values = [entropic_wasserstein2(x, y, reg=r, tol=1e-5) for r in (0.01, 0.1, 1.0)]
    assert values[0] == pytest.approx(exact, rel=0.01)
    assert values[0] < values[1] < values[2]
    with pytest.raises(ValueError, match="reg"):
        entropic_wasserstein2(x, y, reg=0.0)


def test_mmd_of_two_gaussians_against_the_closed_form():
    """Gaussian kernel of bandwidth l between N(0, s^2 I) and N(mu, s^2 I) in d dimensions:
    MMD^2 = 2 c (1 - exp(-|mu|^2 / (2 (l^2 + 2 s^2)))), c = (l^2 / (l^2 + 2 s^2))^(d / 2)."""
    d, bw = 2, 2.0
    mu = torch.tensor([1.5, 0.0], dtype=torch.float64)
    x, y = _cloud(1500, d, 3), _cloud(1500, d, 4) + mu
    c = (bw**2 / (bw**2 + 2.0)) ** (d / 2)
    expected = math.sqrt(2 * c * (1 - math.exp(-float(mu @ mu) / (2 * (bw**2 + 2.0)))))
    assert maximum_mean_discrepancy(x, y, bandwidth=bw) == pytest.approx(expected, abs=0.015)
    assert maximum_mean_discrepancy(x[:200], x[:200]) == 0.0
    with pytest.raises(ValueError, match="bandwidth"):
        maximum_mean_discrepancy(x, y, bandwidth=-1.0)


def test_sliced_ks_hand_computed_in_one_dimension():
    """In 1-D every direction is +-1: the KS statistic of {0, 1, 2} vs {0.5, 1.5, 2.5} is 1/3."""
    x = torch.tensor([[0.0], [1.0], [2.0]])
    y = torch.tensor([[0.5], [1.5], [2.5]])
    assert sliced_ks_distance(x, y, num_projections=16) == pytest.approx(1 / 3)
    assert sliced_ks_distance(x, x + 10.0, num_projections=4) == pytest.approx(1.0)
    assert sliced_ks_distance(x, x) == 0.0


def test_sliced_ks_of_shifted_gaussians_against_the_closed_form():
    """Direction theta at angle phi to a shift of size m: KS = 2 Phi(m |cos phi| / 2) - 1; mean over phi."""
    m = 1.0
    x, y = _cloud(4000, 2, 5), _cloud(4000, 2, 6) + torch.tensor([m, 0.0], dtype=torch.float64)
    phi = torch.linspace(0, math.pi, 20001, dtype=torch.float64)
    expected = float(torch.erf(m * phi.cos().abs() / 2 / math.sqrt(2)).mean())
    assert sliced_ks_distance(
        x, y, num_projections=256, generator=torch.Generator().manual_seed(0)
    ) == pytest.approx(expected, abs=0.03)


def test_effective_sample_size_and_modes_found():
    assert effective_sample_size(torch.zeros(50)) == pytest.approx(50.0)
    assert effective_sample_size(torch.tensor([0.0, -math.inf, -math.inf])) == pytest.approx(1.0)
    # weights (1, 1, 2): (sum w)^2 / sum w^2 = 16 / 6
    assert effective_sample_size(torch.tensor([0.0, 0.0, math.log(2.0)])) == pytest.approx(16 / 6)
    assert effective_sample_size(torch.full((3,), -math.inf)) == 0.0
    assert count_modes_found(torch.tensor([0.5, 0.0, 0.5, 0.0])) == 2


def test_metrics_reject_mismatched_clouds():
    for fn in (wasserstein2, entropic_wasserstein2, maximum_mean_discrepancy, sliced_ks_distance):
        with pytest.raises(ValueError, match="same d"):
            fn(torch.zeros(3, 2), torch.zeros(3, 3))
