"""Issue 17, case 4: a target whose log density or score is NaN/inf away from the origin must not give
silently wrong samples. Every value the samplers receive is checked; the error gives the count and where."""

import math

import pytest
import torch

from diffusers_smd.dilation import (
    DilationPathPipeline,
    DilationPathScheduler,
    annealed_importance_sampling,
    mala,
    parallel_tempering,
    sequential_monte_carlo,
    ula,
)


def _pipe():
    pipe = DilationPathPipeline(DilationPathScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _gaussian_inside(bad_value):
    """log N(0, I) inside the ball |x| < 2, ``bad_value`` outside (autograd gives a zero score there)."""

    def log_density(x):
        inside = x.norm(dim=1) < 2.0
        return torch.where(inside, -0.5 * (x**2).sum(1), torch.full_like(x[:, 0], bad_value))

    return log_density


class _NaNScoreOutside:
    """A closed-form score that is NaN outside |x| < 2 (finite log density everywhere)."""

    dim = 2

    def log_prob(self, x):
        return -0.5 * (x**2).sum(1)

    def score(self, x):
        s = -x.clone()
        s[x.norm(dim=1) >= 2.0] = float("nan")
        return s


@pytest.mark.parametrize(("bad_value", "name"), [(float("nan"), "NaN"), (math.inf, r"\+inf")])
def test_dilation_path_refuses_a_log_density_that_is_not_finite_away_from_the_origin(bad_value, name):
    """Before the fix, only the first probe (at 0, where this density is fine) was checked, and the run
    returned finite samples, most of them where the density is undefined."""
    with pytest.raises(ValueError, match=rf"{name} at \d+ of 500 points at level \d+ of 20 \(lambda=") as err:
        _pipe()(_gaussian_inside(bad_value), 500, 20, torch.Generator().manual_seed(0), dim=2)
    message = str(err.value)
    first = [
        float(v)
        for v in message.split("first such point (target coordinates): [")[1].split("]")[0].split(",")
    ]
    assert math.hypot(*first) >= 2.0  # the point reported is one where the density is undefined
    assert "Langevin step" in message


def test_dilation_path_refuses_a_score_that_is_not_finite():
    with pytest.raises(ValueError, match=r"a NaN/inf score at \d+ of 300 points at level \d+"):
        _pipe()(_NaNScoreOutside(), 300, 20, torch.Generator().manual_seed(0))


def test_the_extension_checks_its_proposal_draws():
    """The path can stay where the density is fine while the fitted proposal reaches where it is NaN."""

    def nan_far_out(x):
        return torch.where(x[:, 0] < 30.0, -0.5 * (x**2).sum(1), torch.full_like(x[:, 0], float("nan")))

    pipe = _pipe()
    with pytest.raises(ValueError, match=r"NaN at \d+ of 20000 points at the extension's proposal draws"):
        pipe(
            nan_far_out,
            1000,
            10,
            torch.Generator().manual_seed(0),
            dim=1,
            reweight_modes=True,
            proposal_inflation=400.0,
        )


@pytest.mark.parametrize(
    ("sampler", "where"),
    [
        (ula, "at ULA step"),
        (mala, "at MALA step"),
        (sequential_monte_carlo, "at SMC"),
        (annealed_importance_sampling, "at AIS level"),
        (parallel_tempering, "at PT round"),
    ],
)
def test_baselines_refuse_a_nan_log_density(sampler, where):
    """The chains start inside the ball (scale 0.3), so the NaN is met during the run, not at the start."""
    with pytest.raises(ValueError, match=rf"NaN at \d+ of \d+ points {where}"):
        sampler(
            _gaussian_inside(float("nan")),
            200,
            50,
            torch.Generator().manual_seed(0),
            dim=2,
            initial_scale=0.3,
        )


def test_a_proposal_outside_the_support_is_rejected_not_an_error():
    """-inf is a legitimate log density for a Metropolis proposal (zero density: rejected), but an unadjusted
    Langevin state there is meaningless."""
    log_density = _gaussian_inside(-math.inf)
    out = mala(
        log_density, 400, 200, torch.Generator().manual_seed(0), dim=2, dtype=torch.float64, initial_scale=0.3
    )
    assert (out.samples.norm(dim=1) < 2.0).all()
    # N(0, I) truncated to the ball of radius 2: E|x|^2 = 2 (1 - (1 + 2) e^-2) / (1 - e^-2)
    expected = 2 * (1 - 3 * math.exp(-2)) / (1 - math.exp(-2))
    assert abs(out.samples.pow(2).sum(1).mean().item() - expected) < 0.15
    with pytest.raises(ValueError, match=r"-inf at \d+ of 400 points at ULA step"):
        ula(log_density, 400, 200, torch.Generator().manual_seed(0), dim=2, initial_scale=0.3)
