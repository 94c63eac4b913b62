"""DilationPathPipeline: the two-mode acceptance case, target kinds, dtypes, budget, bad input; baselines."""

import math

import pytest
import torch
from diffusers import DiffusionPipeline

from diffusers_smd.dilation import (
    REWEIGHTING_INITIAL_STEP_SIZE,
    DilationPathDivergenceError,
    DilationPathPipeline,
    DilationPathScheduler,
    GaussianMixture,
    annealed_geometric_langevin,
    importance_resample,
    make_standard_target,
    mala,
    ula,
)
from diffusers_smd.dilation.evaluator import TargetEvaluator

TWO_MODES = GaussianMixture(torch.tensor([[-5.0], [5.0]]), torch.tensor([0.2, 0.8]))


def _pipe(**config):
    pipe = DilationPathPipeline(DilationPathScheduler(**config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_two_mode_mixture_plain_finds_both_modes_and_extension_recovers_weights():
    pipe = _pipe()
    assert isinstance(pipe, DiffusionPipeline)
    plain = pipe(
        TWO_MODES, num_samples=1000, num_inference_steps=20, generator=torch.Generator().manual_seed(0)
    )
    found = TWO_MODES.mode_weights_of(plain.samples)
    assert (found > 0.05).all(), found  # both modes hold particles
    ext = pipe(
        TWO_MODES,
        num_samples=1000,
        num_inference_steps=20,
        generator=torch.Generator().manual_seed(0),
        reweight_modes=True,
    )
    assert abs(TWO_MODES.mode_weights_of(ext.samples)[0].item() - 0.2) < 0.05
    assert sorted(ext.mode_weights.tolist()) == pytest.approx([0.2, 0.8], abs=0.05)
    centers = sorted(ext.mode_centers.flatten().tolist())
    assert centers == pytest.approx([-5.0, 5.0], abs=0.5)


def test_gradient_budget_and_diagnostics_are_counted():
    pipe = _pipe(langevin_steps_per_level=3)
    out = pipe(TWO_MODES, num_samples=50, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    assert out.num_gradient_evaluations == 50 * 4 * 3
    assert out.num_log_density_evaluations == 0  # only log-density-ONLY evaluations are counted apart
    assert out.step_sizes.shape == (12,) and (out.step_sizes > 0).all()
    assert out.lambdas.tolist()[-1] == 1.0
    ext = pipe(
        TWO_MODES, 50, 4, torch.Generator().manual_seed(0), reweight_modes=True, num_importance_samples=300
    )
    assert ext.num_gradient_evaluations == 50 * 4 * 3 + 50  # + the scores at the particles
    assert ext.num_log_density_evaluations == 300  # the proposals


class _ScoreOnly:
    dim = 1

    def score(self, x):
        return TWO_MODES.score(x)


class _LogProbModule(torch.nn.Module):
    def forward(self, x):
        return TWO_MODES.log_prob(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_target_kind_gives_the_same_chain(dtype):
    """A callable log density, an nn.Module and an object with log_prob drive the same chain (same seed); a
    score-only object, which gives the energy window no log density, drives the chain without the window."""
    kinds = [lambda x: TWO_MODES.log_prob(x), _LogProbModule(), TWO_MODES]
    outs = []
    for kind in kinds:
        out = _pipe()(kind, 64, 5, torch.Generator().manual_seed(1), dim=1, dtype=dtype)
        assert out.samples.dtype == dtype
        outs.append(out.samples)
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-4, atol=1e-4)
    score_only = _pipe()(_ScoreOnly(), 64, 5, torch.Generator().manual_seed(1), dim=1, dtype=dtype).samples
    no_window = _pipe(energy_window=None)(
        TWO_MODES, 64, 5, torch.Generator().manual_seed(1), dim=1, dtype=dtype
    )
    torch.testing.assert_close(score_only, no_window.samples, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(score_only, outs[0], rtol=1e-4, atol=1e-4)  # the window changed the chain


def test_pipeline_saves_and_loads(tmp_path):
    pipe = _pipe(lambda_min=3e-3, langevin_steps_per_level=2)
    pipe.save_pretrained(tmp_path)
    loaded = DilationPathPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.scheduler.config.lambda_min == 3e-3
    a = pipe(TWO_MODES, 16, 3, torch.Generator().manual_seed(2)).samples
    b = loaded(TWO_MODES, 16, 3, torch.Generator().manual_seed(2)).samples
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (lambda x: torch.full((x.shape[0],), float("nan")), "NaN at 8 of 8 points"),
        (lambda x: torch.full((x.shape[0],), float("inf")), r"\+inf at 8 of 8 points"),
        (lambda x: -(x**2).sum(1, keepdim=True), r"shape \(B,\)"),
        (lambda x: -(x**2).sum(), r"shape \(B,\)"),
    ],
)
def test_bad_log_densities_are_rejected(target, message):
    with pytest.raises(ValueError, match=message):
        _pipe()(target, 8, 2, dim=2)


def test_bad_call_arguments_are_rejected():
    pipe = _pipe()
    with pytest.raises(ValueError, match="dim"):
        pipe(lambda x: -(x**2).sum(1), 8, 2)
    with pytest.raises(TypeError, match="target"):
        pipe(3.0, 8, 2, dim=1)
    with pytest.raises(ValueError, match="num_samples"):
        pipe(TWO_MODES, 0, 2)
    with pytest.raises(ValueError, match="dtype"):
        pipe(TWO_MODES, 8, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match="increasing"):
        pipe(TWO_MODES, 8, lambdas=[0.5, 0.1, 1.0])
    with pytest.raises(ValueError, match="log density"):
        pipe(_ScoreOnly(), 8, 2, reweight_modes=True)
    with pytest.raises(ValueError, match="num_importance_samples"):
        pipe(TWO_MODES, 8, 2, reweight_modes=True, num_importance_samples=0)


def test_divergence_during_sampling_names_level_step_and_step_size():
    stiff = GaussianMixture(torch.tensor([[0.0]]), covariances=1e-3)
    pipe = _pipe(
        step_size_adaptation="none", step_size=1.0, initial_step_size=None, langevin_steps_per_level=20
    )
    with pytest.raises(
        DilationPathDivergenceError, match=r"level \d+ of 3 \(lambda=.*\), Langevin step \d+ .*step size"
    ):
        pipe(stiff, 8, 3, torch.Generator().manual_seed(0))


def test_importance_resampling_recovers_known_masses_from_badly_spread_particles():
    target = GaussianMixture(
        torch.tensor([[-6.0, 0.0], [6.0, 0.0], [0.0, 8.0]]), torch.tensor([0.1, 0.3, 0.6])
    )
    gen = torch.Generator().manual_seed(3)
    # equal numbers of particles per mode: the wrong weights a basin-spread run would give
    points = target.means.repeat_interleave(300, 0) + torch.randn(900, 2, generator=gen)
    ev = TargetEvaluator(target)
    rw = importance_resample(ev, points, ev.score(points), torch.ones(900, dtype=torch.float64), 9000, gen)
    order = rw.cluster_means[:, 0].argsort()  # (-6, 0), (0, 8), (6, 0)
    torch.testing.assert_close(
        rw.cluster_weights[order], torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64), atol=0.03, rtol=0
    )
    torch.testing.assert_close(target.mode_weights_of(rw.samples), target.weights, atol=0.04, rtol=0)
    assert ev.num_log_density_evaluations == 9000


@pytest.mark.parametrize("sampler", [ula, mala, annealed_geometric_langevin])
def test_baselines_sample_a_gaussian(sampler):
    target = GaussianMixture(torch.tensor([[2.0, -1.0]]), covariances=0.25)
    kwargs = {"num_levels": 4} if sampler is annealed_geometric_langevin else {}  # 50 steps at beta = 1
    out = sampler(target, 2000, 200, torch.Generator().manual_seed(4), dtype=torch.float64, **kwargs)
    assert out.num_gradient_evaluations == 2000 * 200
    torch.testing.assert_close(out.samples.mean(0), target.means[0], atol=0.05, rtol=0)
    var = out.samples.var(0)
    # MALA is exact; the ULA-type samplers carry the O(h) bias 1 / (1 - s/2) = 4/3 at s = 0.5
    expected = 0.25 if sampler is mala else 0.25 / (1 - 0.25)
    torch.testing.assert_close(var, torch.full((2,), expected, dtype=torch.float64), atol=0.03, rtol=0)


def test_baselines_reject_bad_arguments():
    with pytest.raises(ValueError, match="step_size"):
        ula(TWO_MODES, 10, 10, step_size=0.0)
    with pytest.raises(ValueError, match="num_steps"):
        mala(TWO_MODES, 10, 0)
    with pytest.raises(ValueError, match="num_levels"):
        annealed_geometric_langevin(TWO_MODES, 10, 5, num_levels=6)


def test_metropolis_final_phase_removes_the_langevin_bias_and_is_counted():
    """ULA at s = 0.5 inflates a Gaussian's variance by 1 / (1 - s/2) = 4/3; the MALA phase samples it exactly."""
    target = GaussianMixture(torch.tensor([[1.0]]), covariances=4.0)
    pipe = _pipe(langevin_steps_per_level=5)
    plain = pipe(target, 4000, 6, torch.Generator().manual_seed(5), dtype=torch.float64)
    adjusted = pipe(
        target, 4000, 6, torch.Generator().manual_seed(5), dtype=torch.float64, metropolis_steps=40
    )
    assert abs(plain.samples.var().item() - 4.0 / (1 - 0.25)) < 0.35
    assert abs(adjusted.samples.var().item() - 4.0) < 0.3
    assert adjusted.num_gradient_evaluations == 4000 * (6 * 5 + 40)
    assert adjusted.step_sizes.shape == (6 * 5 + 39,)
    with pytest.raises(ValueError, match="metropolis_steps"):
        pipe(target, 8, 2, metropolis_steps=-1)
    with pytest.raises(ValueError, match="log density"):
        pipe(_ScoreOnly(), 8, 2, metropolis_steps=3)


def test_a_mode_found_by_few_particles_in_high_dimension_gets_its_full_mass():
    """3 particles in 20-D: the proposal is centred on their Newton-step estimate (exact for a Gaussian mode),
    not on their mean (off by about sqrt(20 / 3)), so the mode's mass is still recovered."""
    d = 20
    means = torch.zeros(2, d, dtype=torch.float64)
    means[1, 0] = 15.0
    target = GaussianMixture(means, torch.tensor([0.4, 0.6]))
    gen = torch.Generator().manual_seed(8)
    points = torch.cat(
        [means[0] + torch.randn(300, d, generator=gen), means[1] + torch.randn(3, d, generator=gen)]
    )
    ev = TargetEvaluator(target)
    rw = importance_resample(ev, points, ev.score(points), torch.ones(303, dtype=torch.float64), 6000, gen)
    order = rw.cluster_means[:, 0].argsort()
    torch.testing.assert_close(rw.cluster_means[order][1], means[1])
    torch.testing.assert_close(rw.cluster_weights[order], target.weights, atol=0.04, rtol=0)


@pytest.mark.parametrize(
    ("initial_step_size", "modes_found"), [(None, (1, 1)), (REWEIGHTING_INITIAL_STEP_SIZE, (30, 40))]
)
def test_extension_log_Z_is_the_mass_of_the_modes_found_and_the_hot_start_finds_far_modes(
    initial_step_size, modes_found
):
    """MoG-40 in 50-D (equal weights, modes ~165 from the origin): the default start (T_0 = 50) ends in one
    mode, the extension's hot start (T_0 = 4000) in most; either way ``log Z_hat`` is the log of the mass of
    the modes found, ``log(found / 40)`` (true log Z = 0)."""
    target = make_standard_target("mog40_50d")
    config = {} if initial_step_size is None else {"initial_step_size": initial_step_size}
    out = _pipe(**config)(
        target,
        num_samples=300,
        num_inference_steps=97,
        generator=torch.Generator().manual_seed(0),
        reweight_modes=True,
        metropolis_steps=20,
    )
    found = int((target.mode_weights_of(out.samples) > 0).sum())
    assert modes_found[0] <= found <= modes_found[1], found
    assert out.log_Z == pytest.approx(math.log(found / 40), abs=0.05)


def test_numpy_integers_are_accepted_wherever_integers_are():
    import numpy as np

    out = _pipe()(TWO_MODES, np.int64(16), 3, torch.Generator().manual_seed(0), metropolis_steps=np.int64(2))
    assert out.samples.shape == (16, 1)
    with pytest.raises(ValueError, match="metropolis_steps"):
        _pipe()(TWO_MODES, 8, 2, metropolis_steps=1.5)


def test_energy_window_brings_the_rings_masses_closer_to_the_weights_on_every_seed():
    """ring6_2d, 1000 particles, 100 levels of 10 steps (the benchmark's budget), seeds 0 to 2: the window's
    mode-weight TV is below half of the TV without it on each seed (measured: 0.03-0.06 against 0.14-0.17)."""
    from diffusers_smd.dilation import make_standard_target, mode_weight_tv

    ring = make_standard_target("ring6_2d")
    for seed in range(3):
        tv = {}
        for window in (2.0, None):
            pipe = _pipe(energy_window=window)
            out = pipe(ring, 1000, 100, torch.Generator().manual_seed(seed), dtype=torch.float64)
            tv[window] = mode_weight_tv(ring.mode_weights_of(out.samples), ring.weights)
        assert tv[2.0] < 0.5 * tv[None], (seed, tv)


def test_the_extension_ignores_the_energy_window():
    """reweight_modes=True corrects the masses by importance weights; its path is the one without the window."""
    outs = [
        _pipe(energy_window=w)(
            TWO_MODES,
            64,
            8,
            torch.Generator().manual_seed(0),
            reweight_modes=True,
            num_importance_samples=200,
        ).samples
        for w in (2.0, None)
    ]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
