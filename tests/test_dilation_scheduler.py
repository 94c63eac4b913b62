"""DilationPathScheduler: the diffusers scheduler contract, the step-size rule, save/load, bad input."""

import json
import math

import pytest
import torch
from diffusers import SchedulerMixin

from diffusers_smd.dilation import (
    DilationPathDivergenceError,
    DilationPathScheduler,
    GaussianMixture,
    lambda_schedule,
)


def _run(scheduler, target, num_levels, n=64, seed=0):
    scheduler.set_timesteps(num_levels)
    x = torch.zeros(n, target.dim, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    sizes = []
    for t in scheduler.timesteps:
        out = scheduler.step(target.score(scheduler.scale_model_input(x, t)), t, x, generator=gen)
        x = out.prev_sample
        sizes.append(out.step_size)
    return x, torch.stack(sizes)


def test_timesteps_are_the_levels_repeated_per_langevin_step():
    s = DilationPathScheduler(lambda_min=1e-3, langevin_steps_per_level=3)
    assert isinstance(s, SchedulerMixin)
    s.set_timesteps(4)
    expected = lambda_schedule(4, 1e-3, "geometric")
    torch.testing.assert_close(s.lambdas, expected)
    torch.testing.assert_close(s.timesteps, expected.repeat_interleave(3))
    s.set_timesteps(lambdas=[0.1, 0.5, 1.0])
    assert s.timesteps.tolist() == [0.1] * 3 + [0.5] * 3 + [1.0] * 3


def test_one_step_is_the_langevin_update_on_the_path_score():
    s = DilationPathScheduler(
        step_size=0.3, initial_step_size=None, step_size_adaptation="none", langevin_steps_per_level=1
    )
    s.set_timesteps(lambdas=[0.25, 1.0])
    x = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    target_score = torch.tensor([[2.0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(s.scale_model_input(x, 0.25), x / 0.5)
    gen = torch.Generator().manual_seed(3)
    out = s.step(target_score, 0.25, x, generator=gen)
    xi = torch.randn(1, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    h = 0.25 * 0.3
    torch.testing.assert_close(out.prev_sample, x + h * target_score / 0.5 + math.sqrt(2 * h) * xi)
    assert out.step_size.item() == pytest.approx(h)


def test_step_size_follows_level_and_the_targets_curvature():
    """On N(m, sigma^2 I) the secant curvature is 1 / sigma^2, so h = lambda * s(lambda) * sigma^2 exactly."""
    sigma2 = 0.04
    target = GaussianMixture(torch.tensor([[3.0, -1.0]]), covariances=sigma2)
    s = DilationPathScheduler(
        lambda_min=1e-2, langevin_steps_per_level=5, step_size=0.5, initial_step_size=1.5
    )
    _, sizes = _run(s, target, 6)
    lam = s.timesteps
    dimensionless = torch.tensor([s.level_step_size(float(v)) for v in lam], dtype=torch.float64)
    expected = lam * dimensionless * sigma2
    torch.testing.assert_close(sizes[1:], expected[1:, None].expand_as(sizes[1:]))  # step 0 has no secant yet
    assert dimensionless[0] == pytest.approx(1.5) and dimensionless[-1] == pytest.approx(0.5)


def test_a_wide_target_is_sampled_with_the_right_spread():
    """At the last level the sampler targets N(m, sigma^2); ULA with h = s sigma^2 has stationary variance
    sigma^2 / (1 - s / 2); when max_step_size caps h below s sigma^2, s is h / sigma^2 instead."""
    target = GaussianMixture(torch.tensor([[10.0]]), covariances=25.0)
    s = DilationPathScheduler(langevin_steps_per_level=20, step_size=0.5, max_step_size=50.0)
    x, _ = _run(s, target, 15, n=2000)
    assert abs(x.mean().item() - 10.0) < 0.4
    assert abs(x.var().item() - 25.0 / (1 - 0.25)) < 3.0
    capped = DilationPathScheduler(langevin_steps_per_level=20, step_size=0.5, max_step_size=4.0)
    x, _ = _run(capped, target, 15, n=2000)
    assert abs(x.var().item() - 25.0 / (1 - 0.5 * 4.0 / 25.0)) < 2.5


def test_save_and_load(tmp_path):
    s = DilationPathScheduler(
        lambda_min=5e-3, schedule="linear", langevin_steps_per_level=4, step_size=0.7, max_step_size=2.0
    )
    s.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "scheduler_config.json").read_text())["lambda_min"] == 5e-3
    loaded = DilationPathScheduler.from_pretrained(tmp_path)
    public = lambda cfg: {k: v for k, v in dict(cfg).items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(s.config)
    target = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]))
    torch.testing.assert_close(_run(s, target, 5)[0], _run(loaded, target, 5)[0])
    loaded.set_timesteps(3)
    # the reloaded config drives the levels
    expected = lambda_schedule(3, 5e-3, "linear").repeat_interleave(4)
    torch.testing.assert_close(loaded.timesteps, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step_size": 0.0}, "step_size"),
        ({"step_size": -0.1}, "step_size"),
        ({"max_step_size": 0.0}, "max_step_size"),
        ({"initial_step_size": -1.0}, "initial_step_size"),
        ({"lambda_min": 0.0}, "lambda_min"),
        ({"lambda_min": 1.5}, "lambda_min"),
        ({"schedule": "cosine"}, "schedule"),
        ({"langevin_steps_per_level": 0}, "langevin_steps_per_level"),
        ({"step_size_adaptation": "magic"}, "step_size_adaptation"),
        ({"curvature_momentum": 1.0}, "curvature_momentum"),
        ({"energy_window": -1.0}, "energy_window"),
        ({"energy_window": float("inf")}, "energy_window"),
        ({"energy_window_start": 1.5}, "energy_window_start"),
    ],
)
def test_bad_configuration_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DilationPathScheduler(**kwargs)


def test_bad_schedules_and_calls_are_rejected():
    s = DilationPathScheduler()
    with pytest.raises(ValueError, match="increasing"):
        s.set_timesteps(lambdas=[0.5, 0.3, 1.0])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        s.set_timesteps(lambdas=[0.0, 1.0])
    with pytest.raises(ValueError, match="either"):
        s.set_timesteps(3, lambdas=[0.5, 1.0])
    s.set_timesteps(2)
    with pytest.raises(ValueError, match="shape"):
        s.step(torch.zeros(3, 2), 1.0, torch.zeros(3, 1))


def test_divergence_names_level_step_and_step_size():
    """A stiff target with a fixed step far beyond 2 / L blows up; the error says where and with which step."""
    target = GaussianMixture(torch.tensor([[0.0]]), covariances=1e-2)
    s = DilationPathScheduler(
        step_size_adaptation="none", step_size=1.0, initial_step_size=None, langevin_steps_per_level=50
    )
    s.set_timesteps(lambdas=[0.5, 1.0])
    x = torch.ones(4, 1)
    with pytest.raises(
        DilationPathDivergenceError, match=r"level 0 \(lambda=0\.5\), Langevin step \d+ .*step size 0\.5"
    ) as err:
        for t in s.timesteps:
            x = s.step(target.score(s.scale_model_input(x, t)), t, x).prev_sample
    assert "non-finite" in str(err.value)


def test_the_temperature_schedule_cools_geometrically():
    """T = 1 / (1 - s / 2) goes geometrically in log lambda from T_0 (lambda_min) to T_1 (lambda = 1): at
    lambda = sqrt(lambda_min) it is sqrt(T_0 T_1); the "geometric" schedule interpolates s itself."""
    s = DilationPathScheduler(lambda_min=1e-2, initial_step_size=1.96, step_size=0.5)
    temperature = lambda step: 1 / (1 - step / 2)  # noqa: E731
    assert temperature(s.level_step_size(1e-2)) == pytest.approx(50.0)
    assert temperature(s.level_step_size(1.0)) == pytest.approx(4 / 3)
    assert temperature(s.level_step_size(0.1)) == pytest.approx(math.sqrt(50.0 * 4 / 3))
    g = DilationPathScheduler(
        lambda_min=1e-2, initial_step_size=1.96, step_size=0.5, step_size_schedule="geometric"
    )
    assert g.level_step_size(0.1) == pytest.approx(math.sqrt(1.96 * 0.5))
    with pytest.raises(ValueError, match="below 2"):
        DilationPathScheduler(initial_step_size=2.5)
    with pytest.raises(ValueError, match="step_size_schedule"):
        DilationPathScheduler(step_size_schedule="cosine")
    DilationPathScheduler(initial_step_size=2.5, step_size_schedule="geometric")  # allowed there, as before


def test_an_unstable_move_is_undone():
    """A move along which the measured curvature c makes the last step h unstable (h c > 2) is marked, and
    the estimator keeps the previous point and score; a stable one is accepted."""
    from diffusers_smd.dilation import SecantCurvature

    y0, s0 = torch.zeros(2, 1, dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64)
    y1, s1 = torch.ones(2, 1, dtype=torch.float64), torch.full((2, 1), -10.0, dtype=torch.float64)  # c = 10
    tracker = SecantCurvature(initial_curvature=1.0, min_curvature=1e-3, momentum=0.9)
    tracker.update(y0, s0)
    c = tracker.update(y1, s1, last_step=torch.tensor([0.5, 0.1], dtype=torch.float64))  # h c = 5 and 1
    assert c.tolist() == [10.0, 10.0]
    assert tracker.unstable.tolist() == [True, False]
    assert tracker.point.flatten().tolist() == [0.0, 1.0]
    assert tracker.score.flatten().tolist() == [0.0, -10.0]


def test_the_path_stays_stable_on_quartic_wells():
    """The many-well's curvature grows like 12 x^2 away from its wells, where a hot explicit step overshoots
    further at every step; the stability check keeps every particle near the wells."""
    from diffusers_smd.dilation import DilationPathPipeline, ManyWell

    target = ManyWell(dim=8)
    pipe = DilationPathPipeline(DilationPathScheduler())
    pipe.set_progress_bar_config(disable=True)
    x = pipe(target, 300, 30, torch.Generator().manual_seed(0), dtype=torch.float64).samples
    assert torch.isfinite(x).all()
    assert x[:, 0::2].abs().max() < 3.5 and x[:, 1::2].abs().max() < 6.0


def _window_scheduler(**config):
    s = DilationPathScheduler(step_size_adaptation="none", lambda_min=1e-2, **config)
    s.set_timesteps(11)  # geometric levels: level k sits at path fraction k / 10
    return s


def test_energy_window_gives_the_final_step_to_particles_near_the_best_mode_top():
    """2-D, c = 1, so the window is d / 2 + 2 sqrt(d / 2) = 3 nats and a particle's own-mode energy is
    |score|^2 / 2. Particles within 3 nats of the best log density AND at a mode top take the final step."""
    s = _window_scheduler()
    lam = float(s.lambdas[5])  # path fraction 0.5 >= energy_window_start 0.3
    level, final = s.level_step_size(lam), s.config.step_size
    assert level > final
    x = torch.zeros(4, 2, dtype=torch.float64)
    score = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    log_density = torch.tensor([0.0, -2.0, -1.0, -3.5], dtype=torch.float64)
    h = s.step_sizes(x, score, lam, log_density)
    # cold: gap 0 and own energy 0; gap 2 and own energy 1. Hot: own energy 4.5 > 3; gap 3.5 > 3
    torch.testing.assert_close(h, lam * torch.tensor([final, final, level, level], dtype=torch.float64))
    # the best is a running maximum: a later call whose particles all sit 5 nats lower is all hot
    h = s.step_sizes(x, torch.zeros(4, 2, dtype=torch.float64), lam, log_density - 5.0)
    torch.testing.assert_close(h, torch.full((4,), lam * level, dtype=torch.float64))


def test_energy_window_is_off_before_its_start_without_a_log_density_and_when_none():
    """In each of these cases the step sizes are those of the rule without the window."""
    score = torch.zeros(3, 2, dtype=torch.float64)
    log_density = torch.zeros(3, dtype=torch.float64)
    x = torch.zeros(3, 2, dtype=torch.float64)
    early = _window_scheduler()
    lam = float(early.lambdas[2])  # path fraction 0.2 < 0.3
    torch.testing.assert_close(
        early.step_sizes(x, score, lam, log_density),
        torch.full((3,), lam * early.level_step_size(lam), dtype=torch.float64),
    )
    for s, lp in ((_window_scheduler(), None), (_window_scheduler(energy_window=None), log_density)):
        lam = float(s.lambdas[5])
        torch.testing.assert_close(
            s.step_sizes(x, score, lam, lp),
            torch.full((3,), lam * s.level_step_size(lam), dtype=torch.float64),
        )


def test_without_the_window_the_chain_is_the_curvature_rule_alone():
    """Differential: energy_window=None and log_density=None drive the same chain (the rule before the window),
    and passing the log density to a windowed scheduler changes it."""
    target = GaussianMixture(torch.tensor([[-6.0, 0.0], [6.0, 0.0]]), torch.tensor([0.2, 0.8]))

    def run(scheduler, with_log_density):
        scheduler.set_timesteps(20)
        x = torch.zeros(64, 2, dtype=torch.float64)
        gen = torch.Generator().manual_seed(0)
        for t in scheduler.timesteps:
            lp, score = target.log_prob_and_score(scheduler.scale_model_input(x, t))
            x = scheduler.step(
                score, t, x, generator=gen, log_density=lp if with_log_density else None
            ).prev_sample
        return x

    off = run(DilationPathScheduler(energy_window=None), True)
    torch.testing.assert_close(run(DilationPathScheduler(), False), off, rtol=0, atol=0)
    assert not torch.equal(run(DilationPathScheduler(), True), off)


def test_step_rejects_a_log_density_of_the_wrong_shape():
    s = DilationPathScheduler()
    s.set_timesteps(2)
    with pytest.raises(ValueError, match="log_density"):
        s.step(torch.zeros(3, 2), 1.0, torch.zeros(3, 2), log_density=torch.zeros(2))
