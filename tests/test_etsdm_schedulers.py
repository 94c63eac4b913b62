"""E-TSDM schedulers against their diffusers parents: off == parent, on == independent reference."""

import itertools

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from diffusers_smd import (
    ETSDM_VARIANTS,
    ETSDMDDIMScheduler,
    ETSDMDDPMScheduler,
    ETSDMDPMSolverMultistepScheduler,
    ETSDMFlowMatchEulerDiscreteScheduler,
    ETSDMSettings,
)

SHAPE = (2, 3, 4, 4)
# every variant whose threshold counts integer training timesteps (all but flow matching)
DISCRETE_VARIANTS = [v for v in ETSDM_VARIANTS.values() if v.etsdm_integer_timesteps]
# dpmsolver / sde-dpmsolver are deprecated in diffusers but still supported; keep the log quiet
pytestmark = pytest.mark.filterwarnings("ignore:.*algorithm_type.*:FutureWarning")


def reference_condition(t, threshold=100, width=20):
    """The paper's rule written independently for the default setting (T=1000, 100, 5 intervals)."""
    t = int(t)
    return t if t >= threshold else (t // width) * width


def toy_model(x, t, out_channels=None):
    """Deterministic stand-in for a network: depends on the sample and (smoothly) on the timestep."""
    t = torch.as_tensor(t, dtype=torch.float32)
    out = torch.tanh(0.7 * x) + 0.3 * torch.cos(t / 37.0)
    if out_channels is not None and out_channels != x.shape[1]:
        out = torch.cat([out, torch.tanh(x)[:, : out_channels - x.shape[1]]], dim=1)
    return out


def run_stock_loop(scheduler, steps, seed=0, out_channels=None, condition=None, **step_kwargs):
    """`for t in scheduler.timesteps: x = step(model(x, condition(t)), t, x)`; returns x and the model's t."""
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    x = torch.randn(SHAPE, generator=generator) * scheduler.init_noise_sigma
    seen = []
    for t in scheduler.timesteps:
        model_t = condition(t) if condition is not None else t
        seen.append(int(model_t))
        out = toy_model(scheduler.scale_model_input(x, t), model_t, out_channels)
        x = scheduler.step(out, t, x, generator=generator, **step_kwargs).prev_sample
    return x, seen


DDPM_CONFIGS = [
    {"prediction_type": p, "variance_type": v, "timestep_spacing": s}
    for p, v, s in [
        ("epsilon", "fixed_small", "leading"),
        ("sample", "fixed_large", "trailing"),
        ("v_prediction", "fixed_small_log", "linspace"),
        ("epsilon", "learned_range", "leading"),
    ]
]
DDIM_CONFIGS = [
    {"prediction_type": p, "timestep_spacing": s}
    for p, s in itertools.product(["epsilon", "sample", "v_prediction"], ["leading", "trailing"])
]
DPM_CONFIGS = [
    {
        "algorithm_type": a,
        "solver_order": o,
        "prediction_type": p,
        "final_sigmas_type": "zero" if a.endswith("++") else "sigma_min",
    }
    for a, o, p in itertools.product(
        ["dpmsolver++", "sde-dpmsolver++", "dpmsolver", "sde-dpmsolver"],
        [1, 2, 3],
        ["epsilon", "sample", "v_prediction"],
    )
    if (a, o) != ("sde-dpmsolver", 3)  # diffusers 0.42 has no third-order sde-dpmsolver update (parent fails)
]

CASES = (
    [(DDPMScheduler, ETSDMDDPMScheduler, c, {}) for c in DDPM_CONFIGS]
    + [(DDIMScheduler, ETSDMDDIMScheduler, c, {"eta": eta}) for c in DDIM_CONFIGS for eta in (0.0, 1.0)]
    + [(DPMSolverMultistepScheduler, ETSDMDPMSolverMultistepScheduler, c, {}) for c in DPM_CONFIGS]
)
IDS = [f"{e.__name__}-{'-'.join(str(v) for v in c.values())}-{k}" for _, e, c, k in CASES]
STEPS = 20  # puts real timesteps below 100 that the rule changes (e.g. 50 -> 40)


def out_channels_for(config):
    return 2 * SHAPE[1] if config.get("variance_type") == "learned_range" else None


# either setting at 0 switches E-TSDM off; alternate between them across the cases
OFF_CASES = [(*case, ({"etsdm_intervals": 0}, {"etsdm_threshold": 0})[i % 2]) for i, case in enumerate(CASES)]


@pytest.mark.parametrize(("parent", "etsdm", "config", "step_kwargs", "off"), OFF_CASES, ids=IDS)
def test_switched_off_is_bit_identical_to_the_parent(parent, etsdm, config, step_kwargs, off):
    expected, expected_t = run_stock_loop(
        parent(**config), STEPS, out_channels=out_channels_for(config), **step_kwargs
    )
    got, got_t = run_stock_loop(
        etsdm(**config, **off), STEPS, out_channels=out_channels_for(config), **step_kwargs
    )
    assert got_t == expected_t
    assert torch.equal(got, expected)


@pytest.mark.parametrize(("parent", "etsdm", "config", "step_kwargs"), CASES, ids=IDS)
def test_switched_on_equals_parent_on_the_real_grid_with_the_model_at_f_t(parent, etsdm, config, step_kwargs):
    reference = parent(**config)
    expected, reference_t = run_stock_loop(
        reference, STEPS, out_channels=out_channels_for(config), condition=reference_condition, **step_kwargs
    )
    scheduler = etsdm(**config)
    got, got_t = run_stock_loop(scheduler, STEPS, out_channels=out_channels_for(config), **step_kwargs)
    assert torch.equal(scheduler.true_timesteps, reference.timesteps)
    assert got_t == reference_t
    assert got_t != [int(t) for t in reference.timesteps]  # the rule really changed some conditions
    assert torch.equal(got, expected)


def test_repeated_condition_timesteps_and_a_second_loop():
    scheduler = ETSDMDDPMScheduler()
    scheduler.set_timesteps(100)  # real ..., 30, 20, 10, 0 -> conditions ..., 20, 20, 0, 0
    assert scheduler.timesteps[-4:].tolist() == [20, 20, 0, 0]
    assert scheduler.true_timesteps[-4:].tolist() == [30, 20, 10, 0]
    first, _ = run_stock_loop(scheduler, 100)
    # the stock loop may be run again after the loop finished (as with value-based DDPM / DDIM)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=generator)
    for t in scheduler.timesteps:
        x = scheduler.step(toy_model(x, t), t, x, generator=generator).prev_sample
    assert torch.equal(x, first)


@pytest.mark.parametrize(
    ("parent", "etsdm"),
    [
        (DDPMScheduler, ETSDMDDPMScheduler),
        (DDIMScheduler, ETSDMDDIMScheduler),
        (DPMSolverMultistepScheduler, ETSDMDPMSolverMultistepScheduler),
    ],
)
def test_repeated_condition_timesteps_match_the_reference(parent, etsdm):
    reference = parent()
    expected, reference_t = run_stock_loop(reference, 100, condition=reference_condition)
    scheduler = etsdm()
    got, got_t = run_stock_loop(scheduler, 100)
    assert len(set(got_t)) < len(got_t)  # some condition timesteps repeat
    assert got_t == reference_t and torch.equal(got, expected)
    # a loop started at a repeated value (no begin index) starts at its FIRST occurrence
    scheduler.set_timesteps(100)
    repeated = next(t for t in scheduler.timesteps.tolist() if scheduler.timesteps.tolist().count(t) > 1)
    first = scheduler.timesteps.tolist().index(repeated)
    scheduler.step(torch.zeros(SHAPE), torch.tensor(repeated), torch.zeros(SHAPE))
    assert scheduler.step_index == first + 1


def test_condition_timesteps_for_training_loops():
    for cls in (ETSDMDDPMScheduler, ETSDMDDIMScheduler, ETSDMDPMSolverMultistepScheduler):
        t = torch.randint(0, 1000, (64,))
        assert cls().condition_timesteps(t).tolist() == [reference_condition(v) for v in t]
        assert torch.equal(cls(etsdm_intervals=0).condition_timesteps(t), t)
    scheduler = ETSDMDDPMScheduler(num_train_timesteps=500)  # default threshold scales: 50, width 10
    assert scheduler.etsdm_settings == ETSDMSettings(50, 5)
    assert scheduler.condition_timesteps(torch.tensor([9, 10, 49, 50])).tolist() == [0, 10, 40, 50]


def test_add_noise_in_training_uses_the_real_timestep():
    scheduler, parent = ETSDMDDPMScheduler(), DDPMScheduler()
    x0, noise, t = torch.randn(SHAPE), torch.randn(SHAPE), torch.tensor([15, 35])
    assert torch.equal(scheduler.add_noise(x0, noise, t), parent.add_noise(x0, noise, t))


@pytest.mark.parametrize(
    "bad",
    [
        {"etsdm_threshold": -1},
        {"etsdm_threshold": 1001},
        {"etsdm_threshold": 50.0},
        {"etsdm_threshold": "100"},
    ],
)
@pytest.mark.parametrize("cls", DISCRETE_VARIANTS, ids=lambda cls: cls.__name__)
def test_bad_threshold_fails_at_construction(cls, bad):
    with pytest.raises(ValueError, match="etsdm_threshold"):
        cls(**bad)


@pytest.mark.parametrize(
    "bad",
    [
        {"etsdm_intervals": -1},
        {"etsdm_intervals": 2.0},
        {"etsdm_intervals": None},
        {"etsdm_threshold": 10, "etsdm_intervals": 11},
        {"num_train_timesteps": 30},  # default threshold 3 < default 5 intervals
    ],
)
@pytest.mark.parametrize("cls", DISCRETE_VARIANTS, ids=lambda cls: cls.__name__)
def test_bad_intervals_fail_at_construction(cls, bad):
    with pytest.raises(ValueError, match=r"etsdm_intervals.*(>= 0|\[0, \d+\])"):
        cls(**bad)


def test_flow_matching_takes_a_float_threshold_and_refuses_bad_ones():
    assert ETSDMFlowMatchEulerDiscreteScheduler(etsdm_threshold=50.5).etsdm_settings == (50.5, 5)
    assert ETSDMFlowMatchEulerDiscreteScheduler().etsdm_settings == (100.0, 5)
    for bad in ({"etsdm_threshold": -1.0}, {"etsdm_threshold": 1000.5}, {"etsdm_threshold": float("nan")}):
        with pytest.raises(ValueError, match="etsdm_threshold"):
            ETSDMFlowMatchEulerDiscreteScheduler(**bad)
    with pytest.raises(ValueError, match="etsdm_intervals"):
        ETSDMFlowMatchEulerDiscreteScheduler(etsdm_intervals=1.5)
