"""E-TSDM schedulers against their diffusers parents, for all 14 variants.

* Off means the parent: with E-TSDM switched off, random configs and random call sequences (set_timesteps
  with step counts, custom timesteps or sigmas; step on and off the grid; scale_model_input, add_noise,
  scale_noise, get_velocity, previous_timestep, index_for_timestep, set_begin_index) give exactly the
  parent's outputs, exceptions and state, and so does the parent built back with ``from_config``.
* On means the parent with the network queried at f(t): the stock sampling loop (and the img2img /
  inpainting use of ``set_begin_index`` + ``add_noise``) gives exactly the parent's samples with a model
  whose time input is mapped through an independently written f(t).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import random
import typing

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils import BaseOutput

from diffusers_smd import ETSDM_VARIANTS, ETSDMDDIMScheduler, ETSDMDDPMScheduler
from tests.pipeline_testing import reference_condition

PARENTS = sorted(ETSDM_VARIANTS, key=lambda cls: cls.__name__)
PARENT_IDS = [cls.__name__ for cls in PARENTS]

# values to try for config keys whose annotation does not list them (plus every Literal / bool key)
EXTRA_OPTIONS = {
    "num_train_timesteps": [1000, 200],
    "beta_schedule": ["linear", "scaled_linear", "squaredcos_cap_v2"],
    "prediction_type": ["epsilon", "v_prediction", "sample"],
    "timestep_spacing": ["linspace", "leading", "trailing"],
    "steps_offset": [0, 1],
    "solver_order": [1, 2, 3],
    "interpolation_type": ["linear", "log_linear"],
    "original_inference_steps": [50, 20],
    "shift": [1.0, 3.0],
    "shift_terminal": [None, 0.2],
    "flow_shift": [1.0, 3.0],
    "timestep_scaling": [10.0, 1.0],
}
SKIPPED_KEYS = {
    "trained_betas",
    "solver_p",
    "disable_corrector",
    "sigma_min",
    "sigma_max",
    "base_shift",
    "max_shift",
}


def config_options(parent: type) -> dict[str, list]:
    """Config key -> candidate values, from the parent's ``__init__`` annotations and :data:`EXTRA_OPTIONS`."""
    options = {}
    for name, parameter in list(inspect.signature(parent.__init__).parameters.items())[1:]:
        if name in SKIPPED_KEYS or parameter.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if name in EXTRA_OPTIONS:
            options[name] = EXTRA_OPTIONS[name]
        elif isinstance(parameter.default, bool):
            options[name] = [False, True]
        else:
            literals = _literals(parameter.annotation)
            if literals:
                options[name] = literals
    return options


def _literals(annotation) -> list:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [value for arg in typing.get_args(annotation) for value in _literals(arg)]


def random_config(parent: type, rng: random.Random, change_probability: float = 0.3) -> dict:
    """A random config: each key keeps its default, or (with ``change_probability``) takes a random candidate."""
    config = {
        name: rng.choice(values)
        for name, values in config_options(parent).items()
        if rng.random() < change_probability
    }
    # the training range is always drawn: short schedules are cheaper to build (KDPM2 interpolates every step)
    config["num_train_timesteps"] = rng.choice(EXTRA_OPTIONS["num_train_timesteps"])
    return config


def learned_variance(config: dict) -> bool:
    return config.get("variance_type") in ("learned", "learned_range")


# ---- exact comparison ---------------------------------------------------------------------------
def assert_same(expected, got, where: str = "output") -> None:
    """Same type and value, recursively; tensors bit-equal (dtype, shape, device, values; NaN == NaN)."""
    assert type(got) is type(expected), f"{where}: type {type(got).__name__} != {type(expected).__name__}"
    if isinstance(expected, torch.Tensor):
        assert got.dtype == expected.dtype and got.shape == expected.shape, (
            f"{where}: {got!r} vs {expected!r}"
        )
        assert got.device == expected.device, where
        both_nan = torch.isnan(got) & torch.isnan(expected) if got.is_floating_point() else None
        if both_nan is not None and bool(both_nan.any()):
            assert torch.equal(got[~both_nan], expected[~both_nan]), where
        else:
            assert torch.equal(got, expected), f"{where}: {got!r} != {expected!r}"
    elif isinstance(expected, BaseOutput) or dataclasses.is_dataclass(expected):
        for field in dataclasses.fields(expected):
            assert_same(getattr(expected, field.name), getattr(got, field.name), f"{where}.{field.name}")
    elif isinstance(expected, dict):
        assert list(got) == list(expected), where
        for key in expected:
            assert_same(expected[key], got[key], f"{where}[{key!r}]")
    elif isinstance(expected, (tuple, list)):
        assert len(got) == len(expected), where
        for i, (e, g) in enumerate(zip(expected, got)):
            assert_same(e, g, f"{where}[{i}]")
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got), where
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


def call(obj, name: str, *args, seed: int = 0, **kwargs):
    """``obj.name(*args, **kwargs)`` with the global RNG seeded; returns ("ok", result) or ("error", type, message)."""
    torch.manual_seed(seed)
    try:
        return ("ok", getattr(obj, name)(*args, **kwargs))
    except Exception as error:  # noqa: BLE001 - the parent's exceptions are part of its contract
        return ("error", type(error), str(error))


def assert_same_outcome(expected, got, where: str) -> None:
    assert got[0] == expected[0], f"{where}: {got} vs {expected}"
    if expected[0] == "error":
        assert got[1:] == expected[1:], f"{where}: {got[1:]} vs {expected[1:]}"
    else:
        assert_same(expected[1], got[1], where)


STATE_ATTRIBUTES = (
    "timesteps",
    "sigmas",
    "step_index",
    "begin_index",
    "init_noise_sigma",
    "num_inference_steps",
    "order",
    "state_in_first_order",
)


def state(scheduler, names) -> dict:
    """Public state of a scheduler, for comparison."""
    return {name: getattr(scheduler, name) for name in names}


# ---- random call sequences ----------------------------------------------------------------------------
def accepts(scheduler, method: str, parameter: str) -> bool:
    function = getattr(scheduler, method, None)
    return function is not None and parameter in inspect.signature(function).parameters


class CallSequence:
    """Random scheduler calls, decided once (from the reference's state) and applied to several schedulers."""

    def __init__(self, reference, config: dict, seed: int, shape=(2, 3, 2, 2)):
        self.reference = reference
        self.config = dict(reference.config)
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.shape = shape
        self.out_channels = 2 * shape[1] if learned_variance(self.config) else shape[1]
        self.num_train_timesteps = self.config["num_train_timesteps"]

    def tensor(self, channels: int | None = None) -> torch.Tensor:
        shape = (self.shape[0], channels or self.shape[1], *self.shape[2:])
        return torch.randn(shape, generator=self.generator)

    def timestep(self):
        """A timestep as pipelines, training loops and inversion code pass them: on the grid or off it."""
        grid = getattr(self.reference, "timesteps", None)
        kind = self.rng.random()
        if grid is not None and len(grid) and kind < 0.65:
            value = grid[self.rng.randrange(len(grid))]
            return value if kind < 0.45 else value.item()
        value = self.rng.randrange(self.num_train_timesteps)
        if grid is not None and grid.is_floating_point():
            value = float(value) + self.rng.choice([0.0, 0.5])  # float schedules refuse integer timesteps
        return value if kind < 0.85 else torch.tensor(value)

    def batch_timesteps(self) -> torch.Tensor:
        grid = getattr(self.reference, "timesteps", None)
        if grid is not None and len(grid) and self.rng.random() < 0.6:
            index = self.rng.randrange(len(grid))
            return grid[index : index + 1].repeat(self.shape[0])
        return torch.randint(0, self.num_train_timesteps, (self.shape[0],), generator=self.generator)

    def set_timesteps_kwargs(self) -> dict:
        kwargs: dict = {}
        kind = self.rng.random()
        steps = self.rng.randrange(1, 30)
        if kind < 0.2 and accepts(self.reference, "set_timesteps", "timesteps"):
            values = sorted(self.rng.sample(range(self.num_train_timesteps), k=min(steps, 8)), reverse=True)
            if self.config.get("_class_name", "").startswith("FlowMatch") or type(
                self.reference
            ).__name__.startswith("FlowMatch"):
                values = [float(v) for v in values]
            kwargs["timesteps"] = values
        elif kind < 0.4 and accepts(self.reference, "set_timesteps", "sigmas"):
            top = (
                1.0
                if "FlowMatch" in type(self.reference).__name__ or self.config.get("use_flow_sigmas")
                else 14.0
            )
            kwargs["sigmas"] = sorted(
                (self.rng.uniform(0.002, top) for _ in range(min(steps, 8))), reverse=True
            )
        else:
            kwargs["num_inference_steps"] = steps
        if accepts(self.reference, "set_timesteps", "mu") and self.rng.random() < 0.5:
            kwargs["mu"] = self.rng.uniform(0.1, 1.5)
        if accepts(self.reference, "set_timesteps", "strength") and self.rng.random() < 0.3:
            kwargs["strength"] = self.rng.choice([0.5, 1.0])
        return kwargs

    def step_kwargs(self) -> dict:
        kwargs: dict = {"return_dict": self.rng.random() < 0.8}
        if accepts(self.reference, "step", "eta"):
            kwargs["eta"] = self.rng.choice([0.0, 0.3, 1.0])
        if accepts(self.reference, "step", "s_churn") and self.rng.random() < 0.3:
            kwargs["s_churn"] = 0.5
        return kwargs

    def operations(self, length: int):
        """Yield ``(label, method name, args, kwargs, seed)``; stepping ops use the current sample lazily."""
        for position in range(length):
            op = "set_timesteps" if position == 0 else self.rng.choice(
                ["set_timesteps"] * 3 + ["step"] * 6 + ["scale_model_input"] * 2
                + ["add_noise", "scale_noise", "get_velocity", "previous_timestep", "index_for_timestep",
                   "index_for_timestep_in", "set_begin_index"]
            )  # fmt: skip
            seed = self.rng.randrange(2**31)
            label = f"#{position} {op}"
            if op == "set_timesteps":
                yield label, op, (), self.set_timesteps_kwargs(), seed
            elif op == "step":
                yield label, op, ("OUTPUT", self.timestep(), "SAMPLE"), self.step_kwargs(), seed
            elif op == "scale_model_input":
                yield label, op, ("SAMPLE", self.timestep()), {}, seed
            elif op == "add_noise":
                yield label, op, (self.tensor(), self.tensor(), self.batch_timesteps()), {}, seed
            elif op == "scale_noise":
                yield label, op, (self.tensor(), self.batch_timesteps(), self.tensor()), {}, seed
            elif op == "get_velocity":
                yield label, op, (self.tensor(), self.tensor(), self.batch_timesteps()), {}, seed
            elif op in ("previous_timestep", "index_for_timestep"):
                yield label, op, (self.timestep(),), {}, seed
            elif op == "index_for_timestep_in":
                grid = getattr(self.reference, "timesteps", None)
                if grid is not None:
                    yield label, "index_for_timestep", (self.timestep(), grid.clone()), {}, seed
            elif op == "set_begin_index":
                grid = getattr(self.reference, "timesteps", None)
                yield label, op, (self.rng.randrange(max(len(grid), 1)) if grid is not None else 0,), {}, seed


def _outcome(name, arguments, kwargs, seed, step_generator, scheduler):
    extra = {"generator": torch.Generator().manual_seed(seed)} if step_generator else {}
    arguments = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in arguments)
    return call(scheduler, name, *arguments, seed=seed, **kwargs, **extra)


def run_lockstep(reference, others: list, config: dict, seed: int, length: int = 24) -> int:
    """Apply one random call sequence to ``reference`` and each of ``others``; assert identical outcomes.

    Returns the number of calls that succeeded on the reference (so callers can check the test did work).
    """
    sequence = CallSequence(reference, config, seed)
    sample = sequence.tensor()
    # the parent's public state (a variant may add attributes: DDPM / DDIM variants add a step index)
    names = [name for name in STATE_ATTRIBUTES if hasattr(reference, name)]
    succeeded = 0
    for label, name, args, kwargs, call_seed in sequence.operations(length):
        if not hasattr(reference, name):
            for other in others:
                assert not hasattr(other, name) or name in ("set_begin_index",), (
                    f"{label}: {type(other).__name__}"
                )
            continue
        output = sequence.tensor(sequence.out_channels) if name == "step" else None
        concrete = tuple(output if a == "OUTPUT" else sample if a == "SAMPLE" else a for a in args)
        step_generator = name == "step" and accepts(reference, "step", "generator")

        outcome = functools.partial(_outcome, name, concrete, kwargs, call_seed, step_generator)
        expected = outcome(reference)
        for other in others:
            assert_same_outcome(expected, outcome(other), f"{label}{kwargs} {type(other).__name__}")
            assert_same(
                state(reference, names), state(other, names), f"{label} state of {type(other).__name__}"
            )
        if expected[0] == "ok":
            succeeded += 1
            if name == "step":
                result = expected[1]
                sample = result.prev_sample if hasattr(result, "prev_sample") else result[0]
    return succeeded


# ---- off means the parent -----------------------------------------------------------------------------
OFF_SWITCHES = ({"etsdm_intervals": 0}, {"etsdm_threshold": 0}, {"etsdm_threshold": 0, "etsdm_intervals": 0})
SEEDS = range(5)


def build(cls, config: dict):
    try:
        return ("ok", cls(**config))
    except Exception as error:  # noqa: BLE001 - a refused config must be refused alike
        return ("error", type(error), str(error))


def public_config(config) -> dict:
    return {
        k: v
        for k, v in config.items()
        if not k.startswith("_") and k not in ("etsdm_threshold", "etsdm_intervals")
    }


def draw_parent(parent: type, variant: type, rng: random.Random, extra: dict):
    """Draw configs until the parent accepts one; every refused config must be refused alike by the variant."""
    for _ in range(30):
        config = random_config(parent, rng)
        expected, got = build(parent, config), build(variant, {**config, **extra})
        assert got[0] == expected[0], f"{config}: {got} vs {expected}"
        if expected[0] == "error":
            assert got[1:] == expected[1:], config
            continue
        return config, expected[1], got[1]
    raise AssertionError(f"no config of {parent.__name__} was accepted")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("parent", PARENTS, ids=PARENT_IDS)
def test_switched_off_every_method_is_the_parents(parent, seed):
    variant = ETSDM_VARIANTS[parent]
    rng = random.Random(f"off-{parent.__name__}-{seed}")
    off = OFF_SWITCHES[seed % len(OFF_SWITCHES)]
    config, reference, direct = draw_parent(parent, variant, rng, off)
    assert not direct.etsdm_enabled
    # from_config in both directions: the variant from the parent's config, the parent from the variant's
    via_config = variant.from_config(reference.config, **off)
    back = parent.from_config(direct.config)
    assert type(via_config) is variant and type(back) is parent
    assert public_config(via_config.config) == public_config(direct.config) == public_config(reference.config)
    assert public_config(back.config) == public_config(reference.config)
    succeeded = run_lockstep(reference, [direct, via_config, back], config, seed)
    assert succeeded >= 5  # the sequence really exercised the schedulers


def test_ddim_steps_at_any_timestep_like_its_parent():
    """diffusers' test_eta / test_time_indices / test_steps_offset / test_inference_steps step off the grid."""
    for config in (
        {},
        {"steps_offset": 1},
        {"timestep_spacing": "trailing"},
        {"timestep_spacing": "linspace"},
    ):
        parent = DDIMScheduler(**config)
        for variant in (
            ETSDMDDIMScheduler(**config, etsdm_intervals=0),
            ETSDMDDIMScheduler(**config, etsdm_threshold=0),
        ):
            for scheduler in (parent, variant):
                scheduler.set_timesteps(50)
            sample, output = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
            for t, eta in (
                (1, 0.0),
                (10, 0.5),
                (500, 1.0),
                (999, 0.0),
                (0, 0.3),
            ):  # 1 and 999 are off the grid
                expected = parent.step(output, t, sample, eta=eta, generator=torch.Generator().manual_seed(t))
                got = variant.step(output, t, sample, eta=eta, generator=torch.Generator().manual_seed(t))
                assert_same(expected, got, f"DDIM {config} t={t}")


def test_ddpm_previous_timestep_returns_a_tensor_like_its_parent():
    """diffusers' test_custom_timesteps: DDPMScheduler.previous_timestep returns a tensor for tensor input."""
    for custom in (None, [100, 87, 50, 1, 0]):
        parent, variant = DDPMScheduler(), ETSDMDDPMScheduler(etsdm_intervals=0)
        for scheduler in (parent, variant):
            scheduler.set_timesteps(timesteps=custom) if custom else scheduler.set_timesteps(10)
        for t in parent.timesteps:
            assert_same(parent.previous_timestep(t), variant.previous_timestep(t), f"previous_timestep({t})")
            assert_same(parent.previous_timestep(int(t)), variant.previous_timestep(int(t)), "int input")


# ---- on means the parent with the network at f(t) --------------------------------------------------------
SHAPE = (2, 3, 2, 2)


def toy_model(x: torch.Tensor, t, channels: int) -> torch.Tensor:
    """A deterministic stand-in for a network: depends on the sample and smoothly on the timestep."""
    t = torch.as_tensor(t, dtype=torch.float32)
    out = torch.tanh(0.7 * x) + 0.3 * torch.cos(t / 37.0)
    return torch.cat([out, torch.tanh(x)], dim=1)[:, :channels]


def sampling_loop(
    scheduler, set_kwargs: dict, seed: int, channels: int, condition=None, mode: str = "txt2img"
):
    """A stock pipeline's loop, with img2img (set_begin_index + add_noise) and inpainting (add_noise after
    every step) variants. Returns the final sample and every timestep the model saw."""
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(**set_kwargs)
    timesteps = scheduler.timesteps
    seen = []
    if mode == "txt2img":
        x = torch.randn(SHAPE, generator=generator) * getattr(scheduler, "init_noise_sigma", 1.0)
        begin = 0
    else:
        # start where a condition is shared (if any), so that add_noise's timestep must be translated
        real = getattr(scheduler, "true_timesteps", None)
        shared = (
            (timesteps != real).nonzero()
            if condition is None
            else (condition(timesteps) != timesteps).nonzero()
        )
        begin = int(shared[0]) if len(shared) else len(timesteps) // 2
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        clean, noise = torch.randn(SHAPE, generator=generator), torch.randn(SHAPE, generator=generator)
        start = timesteps[begin : begin + 1].repeat(SHAPE[0])
        if hasattr(scheduler, "scale_noise"):  # flow matching's add_noise
            x = scheduler.scale_noise(clean, start, noise)
        else:
            x = scheduler.add_noise(clean, noise, start)
        mask = (torch.arange(SHAPE[-1]) % 2).float()
    loop = timesteps[begin:]
    step_kwargs = {"generator": generator} if accepts(scheduler, "step", "generator") else {}
    for i, t in enumerate(loop):
        model_input = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
        model_t = condition(t) if condition is not None else t
        seen.append(model_t.item())
        x = scheduler.step(toy_model(model_input, model_t, channels), t, x, **step_kwargs).prev_sample
        if mode == "inpaint" and i < len(loop) - 1 and hasattr(scheduler, "add_noise"):
            known = scheduler.add_noise(clean, noise, torch.tensor([loop[i + 1]]))
            x = mask * known + (1 - mask) * x
    return x, seen


def on_settings(parent: type, config: dict, rng: random.Random) -> tuple:
    """Large threshold (half the range) so that short grids have shared conditions too."""
    num_train_timesteps = config.get("num_train_timesteps", 1000)
    intervals = rng.choice([2, 5])
    variant = ETSDM_VARIANTS[parent]
    threshold = num_train_timesteps // 2 if variant.etsdm_integer_timesteps else num_train_timesteps / 2
    return threshold, intervals


@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
@pytest.mark.parametrize("parent", PARENTS, ids=PARENT_IDS)
def test_switched_on_is_the_parent_with_the_network_at_f_t(parent, mode):
    variant = ETSDM_VARIANTS[parent]
    rng = random.Random(f"on-{parent.__name__}-{mode}")
    checked = 0
    for _ in range(40):
        config = random_config(parent, rng)
        channels = 2 * SHAPE[1] if learned_variance(config) else SHAPE[1]
        sequence_rng = random.Random(rng.random())
        try:
            reference = parent(**config)
            set_kwargs = CallSequence(reference, config, sequence_rng.randrange(1000)).set_timesteps_kwargs()
            threshold, intervals = on_settings(parent, config, rng)
            condition = functools.partial(reference_condition, threshold=threshold, intervals=intervals)
            expected, expected_seen = sampling_loop(reference, set_kwargs, 0, channels, condition, mode)
        except Exception:  # noqa: BLE001 - configs the parent cannot sample with are not the point here
            continue
        if (
            not torch.isfinite(expected).all()
            or expected_seen == [t.item() for t in reference.timesteps][: len(expected_seen)]
        ):
            continue
        scheduler = variant(**config, etsdm_threshold=threshold, etsdm_intervals=intervals)
        got, got_seen = sampling_loop(scheduler, set_kwargs, 0, channels, None, mode)
        assert_same(reference.timesteps, scheduler.true_timesteps, "true_timesteps")
        assert_same(
            reference_condition(reference.timesteps, threshold, intervals), scheduler.timesteps, "timesteps"
        )
        assert got_seen == expected_seen, f"{config} {set_kwargs}"
        assert_same(expected, got, f"{config} {set_kwargs}")
        checked += 1
        if checked == 2:
            return
    raise AssertionError(f"only {checked} configs of {parent.__name__} could be checked")


@pytest.mark.parametrize("parent", PARENTS, ids=PARENT_IDS)
def test_switched_on_every_set_timesteps_exposes_the_shared_grid(parent):
    """Grids are shared once per set_timesteps (and reused when a pipeline asks for the same grid again)."""
    variant = ETSDM_VARIANTS[parent]
    threshold, intervals = on_settings(parent, {}, random.Random(0))
    scheduler, reference = variant(etsdm_threshold=threshold, etsdm_intervals=intervals), parent()
    for steps in (7, 12, 7, 7, 30):
        for s in (scheduler, reference):
            s.set_timesteps(steps)
        assert_same(reference.timesteps, scheduler.true_timesteps, f"{steps} steps")
        assert_same(
            reference_condition(reference.timesteps, threshold, intervals), scheduler.timesteps, f"{steps}"
        )
