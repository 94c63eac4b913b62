"""The standard targets: exact definitions, normalising constants and exact samplers, against independent
constructions and quadrature."""

import math

import pytest
import torch

from diffusers_smd.dilation import (
    STANDARD_TARGETS,
    UNEQUAL_WEIGHT_MIXTURES,
    GaussianMixture,
    ManyWell,
    make_standard_target,
)
from diffusers_smd.dilation.evaluator import TargetEvaluator

FAB_DOUBLE_WELL_Z = 11784.50927  # fab-torch, fab/target_distributions/double_well.py (TARGET_Z)


def test_mog40_means_are_fabs_draw_with_seed_0_and_the_components_are_unit_equal_weight():
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(
            0
        )  # FAB's GMM: torch.manual_seed(seed); (torch.rand((n, dim)) - 0.5) * 2 * loc_scaling
        fab_means = (torch.rand((40, 2)) - 0.5) * 2 * 40
    finally:
        torch.random.set_rng_state(state)
    target = make_standard_target("mog40_2d")
    assert torch.equal(target.means, fab_means.double())
    assert torch.equal(target.covariances, torch.eye(2, dtype=torch.float64).expand(40, 2, 2))
    assert torch.equal(target.weights, torch.full((40,), 1 / 40, dtype=torch.float64))
    big = make_standard_target("mog40_50d")
    assert big.dim == 50 and big.num_modes == 40
    assert big.means.abs().max() <= 40 and big.means.abs().max() > 39  # uniform in [-40, 40]^50


def test_every_standard_target_is_a_callable_log_density_with_dim_score_sampler_and_log_z():
    for name in STANDARD_TARGETS:
        target = make_standard_target(name)
        x = target.sample(5, torch.Generator().manual_seed(0))
        assert x.shape == (5, target.dim), name
        torch.testing.assert_close(target(x), target.log_prob(x))
        ev = TargetEvaluator(target)
        xg = x.clone().requires_grad_(True)
        (autograd,) = torch.autograd.grad(target.log_prob(xg).sum(), xg)
        torch.testing.assert_close(ev.score(x), autograd)
        assert math.isfinite(target.log_Z)
    assert set(UNEQUAL_WEIGHT_MIXTURES) <= set(STANDARD_TARGETS)
    for name in UNEQUAL_WEIGHT_MIXTURES:
        w = make_standard_target(name).weights
        assert w.max() > 1.5 * w.min(), name
    with pytest.raises(ValueError, match="unknown target"):
        make_standard_target("mog41")


def test_ring6_and_grid_definitions():
    ring = make_standard_target("ring6_2d")
    torch.testing.assert_close(ring.means.norm(dim=1), torch.full((6,), 10.0, dtype=torch.float64))
    torch.testing.assert_close(ring.weights, torch.arange(1, 7, dtype=torch.float64) / 21)
    grid = make_standard_target("grid7x7_2d")
    assert grid.num_modes == 49 and grid.means.min() == -30 and grid.means.max() == 30
    assert 1.0 <= float(grid.weights.max() / grid.weights.min()) <= 10.0


def test_the_ring_integrates_to_exp_log_z():
    target = make_standard_target("ring6_2d")
    t = torch.linspace(-16, 16, 321, dtype=torch.float64)
    xx, yy = torch.meshgrid(t, t, indexing="ij")
    mass = target.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp().sum() * (t[1] - t[0]) ** 2
    assert abs(math.log(float(mass)) - target.log_Z) < 1e-4


def test_many_well_normalising_constant_and_well_weights():
    target = ManyWell(dim=32)
    assert target.log_Z1 == pytest.approx(math.log(FAB_DOUBLE_WELL_Z), abs=1e-7)
    assert target.log_Z == pytest.approx(
        16 * (math.log(FAB_DOUBLE_WELL_Z) + 0.5 * math.log(2 * math.pi)), abs=1e-5
    )
    # independent quadrature of one double well on a fine grid (trapezoid)
    t = torch.linspace(-5, 5, 200001, dtype=torch.float64)
    f = torch.exp(-(t**4) + 6 * t**2 + 0.5 * t)
    z = torch.trapezoid(f, t)
    assert math.log(float(z)) == pytest.approx(target.log_Z1, abs=1e-8)
    assert target.right_well_weight == pytest.approx(float(torch.trapezoid(f[t > 0], t[t > 0]) / z), abs=1e-6)
    # the unnormalised log density of a 2-D copy at a hand-computed point
    x = torch.tensor([[1.0, 2.0, 0.0, 0.0]], dtype=torch.float64)
    small = ManyWell(dim=4)
    assert small.log_prob(x).item() == pytest.approx((-1 + 6 + 0.5) - 2.0)


def test_many_well_exact_sampler_matches_the_quadrature():
    target = ManyWell(dim=4)
    x = target.sample(20000, torch.Generator().manual_seed(1))
    x1 = torch.cat([x[:, 0], x[:, 2]])
    t = torch.linspace(-5, 5, 20001, dtype=torch.float64)
    p = torch.exp(-(t**4) + 6 * t**2 + 0.5 * t)
    p = p / torch.trapezoid(p, t)
    for k in (1, 2):
        moment = float(torch.trapezoid(t**k * p, t))
        assert abs(float((x1**k).mean()) - moment) < 0.03, k
    assert abs(float((x1 > 0).double().mean()) - target.right_well_weight) < 0.01
    torch.testing.assert_close(target.well_weights_of(x), (x[:, 0::2] > 0).double().mean(0))
    y = torch.cat([x[:, 1], x[:, 3]])
    assert abs(float(y.var()) - 1.0) < 0.03


def test_bad_many_well_arguments():
    with pytest.raises(ValueError, match="even"):
        ManyWell(dim=3)
    with pytest.raises(ValueError, match="c must be positive"):
        ManyWell(dim=2, c=0.0)


def test_mixture_log_prob_and_score_at_once_equal_the_separate_calls():
    target = GaussianMixture(
        torch.tensor([[0.0, 1.0], [3.0, -1.0]]),
        None,
        torch.tensor([[[1.0, 0.3], [0.3, 0.5]], [[2.0, 0], [0, 1.0]]]),
    )
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lp, s = target.log_prob_and_score(x)
    torch.testing.assert_close(lp, target.log_prob(x))
    torch.testing.assert_close(s, target.score(x))
