"""Which parent has which E-TSDM variant, what a saved model records, and SMDPipeline never sampling an
E-TSDM-trained model at the wrong time condition."""

import json
import logging

import numpy as np
import pytest
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils import logging as diffusers_logging

import diffusers_smd
from diffusers_smd import (
    ETSDM_VARIANTS,
    ETSDMDDIMScheduler,
    ETSDMDDPMScheduler,
    ETSDMEulerDiscreteScheduler,
    ETSDMFlowMatchEulerDiscreteScheduler,
    ETSDMSchedulerMixin,
    ETSDMSettings,
    SMDPipeline,
    convert_to_etsdm,
    etsdm_settings_from_config,
    etsdm_variant,
)
from tests.pipeline_testing import condition_hook, seeded, tiny_unet

PARENT_NAMES = [
    "DDPMScheduler",
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "UniPCMultistepScheduler",
    "DEISMultistepScheduler",
    "LMSDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "LCMScheduler",
    "TCDScheduler",
    "FlowMatchEulerDiscreteScheduler",
]


def test_the_14_variants_are_importable_from_the_package_and_mapped_from_their_parents():
    import diffusers

    assert sorted(parent.__name__ for parent in ETSDM_VARIANTS) == sorted(PARENT_NAMES)
    for name in PARENT_NAMES:
        parent, variant = getattr(diffusers, name), getattr(diffusers_smd, f"ETSDM{name}")
        assert ETSDM_VARIANTS[parent] is variant and etsdm_variant(parent) is variant
        assert etsdm_variant(variant) is variant
        assert variant.__bases__ == (ETSDMSchedulerMixin, parent) and variant.etsdm_parent is parent
        assert variant.__module__ == "diffusers_smd" and f"ETSDM{name}" in diffusers_smd.__all__
    with pytest.raises(TypeError):
        ETSDM_VARIANTS[PNDMScheduler] = ETSDMDDPMScheduler  # read-only


def test_a_parent_without_a_variant_is_refused_with_the_list():
    with pytest.raises(
        ValueError, match=r"PNDMScheduler has no E-TSDM variant; supported schedulers: DDIMScheduler, "
    ):
        etsdm_variant(PNDMScheduler)


def test_settings_from_a_config_a_scheduler_or_a_folder(tmp_path):
    assert etsdm_settings_from_config(DDPMScheduler().config) is None  # trained without E-TSDM
    assert etsdm_settings_from_config(DDPMScheduler()) is None
    assert etsdm_settings_from_config(ETSDMDDPMScheduler(etsdm_intervals=0)) is None  # switched off
    assert etsdm_settings_from_config(ETSDMDDPMScheduler.from_config({}, etsdm_threshold=0).config) is None
    scheduler = ETSDMDDPMScheduler(num_train_timesteps=500, etsdm_threshold=40, etsdm_intervals=4)
    assert etsdm_settings_from_config(scheduler) == ETSDMSettings(40, 4)
    assert etsdm_settings_from_config(dict(scheduler.config)) == ETSDMSettings(40, 4)
    # a stock scheduler built from an E-TSDM config keeps the keys (diffusers keeps unknown keys)
    assert etsdm_settings_from_config(EulerDiscreteScheduler.from_config(scheduler.config)) == ETSDMSettings(
        40, 4
    )
    # a default threshold resolves for the config's range
    assert etsdm_settings_from_config(
        {"num_train_timesteps": 200, "etsdm_threshold": None, "etsdm_intervals": 5}
    ) == (
        20,
        5,
    )
    flow = ETSDMFlowMatchEulerDiscreteScheduler(etsdm_threshold=250.5)
    assert etsdm_settings_from_config(FlowMatchEulerDiscreteScheduler.from_config(flow.config)) == (250.5, 5)
    # folders: a saved scheduler, and a saved pipeline (scheduler/ subfolder)
    scheduler.save_pretrained(tmp_path / "scheduler")
    assert etsdm_settings_from_config(tmp_path / "scheduler") == ETSDMSettings(40, 4)
    assert etsdm_settings_from_config(tmp_path) == ETSDMSettings(40, 4)
    with pytest.raises(ValueError, match="holds no scheduler config"):
        etsdm_settings_from_config(tmp_path / "nothing")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match=r"broken.json is not valid JSON"):
        etsdm_settings_from_config(tmp_path / "broken.json")
    with pytest.raises(ValueError, match="etsdm_intervals"):
        etsdm_settings_from_config({"num_train_timesteps": 1000, "etsdm_intervals": -3})


def test_convert_a_stock_scheduler_keeps_its_config():
    stock = UniPCMultistepScheduler(solver_order=3, prediction_type="v_prediction", num_train_timesteps=800)
    converted = convert_to_etsdm(stock, ETSDMSettings(80, 4))
    assert type(converted) is ETSDM_VARIANTS[UniPCMultistepScheduler]
    assert converted.etsdm_settings == (80, 4)
    assert (converted.config.solver_order, converted.config.prediction_type) == (3, "v_prediction")
    assert converted.config.num_train_timesteps == 800
    assert convert_to_etsdm(converted, ETSDMSettings(80, 4)) is converted  # already that variant
    assert convert_to_etsdm(converted, ETSDMSettings(40, 4)).etsdm_settings == (40, 4)
    with pytest.raises(ValueError, match="PNDMScheduler has no E-TSDM variant"):
        convert_to_etsdm(PNDMScheduler(), ETSDMSettings(80, 4))
    with pytest.raises(TypeError, match="ETSDMSettings"):
        convert_to_etsdm(stock, (80, 4))


def test_continuous_euler_timesteps_are_refused_clearly():
    with pytest.raises(ValueError, match="timestep_type='continuous'"):
        ETSDMEulerDiscreteScheduler(timestep_type="continuous", prediction_type="v_prediction")
    off = ETSDMEulerDiscreteScheduler(
        timestep_type="continuous", prediction_type="v_prediction", etsdm_intervals=0
    )
    assert off.timesteps.min() < 0  # off, it is the parent


# ---- SMDPipeline: a model remembers how it was trained ----------------------------------------------------
T = 100
TRAINED = ETSDMSettings(20, 4)


def etsdm_pipeline():
    return SMDPipeline(
        unet=tiny_unet(),
        scheduler=ETSDMDDPMScheduler(num_train_timesteps=T, etsdm_threshold=20, etsdm_intervals=4),
    )


def sample(pipe, steps=10):
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=2, num_inference_steps=steps, generator=seeded(0), output_type="np").images


@pytest.fixture
def warnings_log(caplog):
    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            yield caplog
    finally:
        diffusers_logging.disable_propagation()


def test_a_saved_pipeline_records_its_settings_and_loads_them_back(tmp_path):
    pipe = etsdm_pipeline()
    pipe.save_pretrained(tmp_path)
    assert etsdm_settings_from_config(tmp_path) == TRAINED
    loaded = SMDPipeline.from_pretrained(tmp_path)
    assert type(loaded.scheduler) is ETSDMDDPMScheduler and loaded.scheduler.etsdm_settings == TRAINED


def test_a_stock_scheduler_is_converted_at_call_time(warnings_log):
    pipe = etsdm_pipeline()
    stock = EulerDiscreteScheduler.from_config(pipe.scheduler.config)  # the usual diffusers swap
    pipe.scheduler = stock
    assert pipe.scheduler is stock  # assigning keeps the user's object (and class, for save_pretrained)
    images = sample(pipe)
    assert type(pipe.scheduler) is ETSDMEulerDiscreteScheduler and pipe.scheduler.etsdm_settings == TRAINED
    assert "ETSDMEulerDiscreteScheduler instead of EulerDiscreteScheduler" in warnings_log.text
    assert "etsdm_threshold=20, etsdm_intervals=4" in warnings_log.text
    # the independent reference: the stock scheduler with a UNet whose time input is mapped through f(t)
    reference = SMDPipeline(unet=tiny_unet(), scheduler=EulerDiscreteScheduler(num_train_timesteps=T))
    seen, handle = condition_hook(reference.unet, 20, 4)
    expected = sample(reference)
    handle.remove()
    assert any(a != b for a, b in zip(seen, reference.scheduler.timesteps.tolist()))
    np.testing.assert_array_equal(images, expected)


def test_a_fresh_stock_scheduler_gets_the_record_and_is_converted(tmp_path):
    pipe = etsdm_pipeline()
    fresh = DDIMScheduler(num_train_timesteps=T)  # built without the model's config
    pipe.scheduler = fresh
    assert fresh.config["etsdm_threshold"] == 20 and fresh.config["etsdm_intervals"] == 4
    pipe.save_pretrained(tmp_path)  # saved before any call: still recorded
    assert json.loads((tmp_path / "model_index.json").read_text())["scheduler"] == [
        "diffusers",
        "DDIMScheduler",
    ]
    assert etsdm_settings_from_config(tmp_path) == TRAINED
    images = sample(pipe)
    assert type(pipe.scheduler) is ETSDMDDIMScheduler
    np.testing.assert_array_equal(images, sample(SMDPipeline.from_pretrained(tmp_path)))


def test_a_scheduler_without_variant_is_refused_before_any_step():
    pipe = etsdm_pipeline()
    pipe.scheduler = PNDMScheduler(num_train_timesteps=T)
    seen, handle = condition_hook(pipe.unet)
    with pytest.raises(
        ValueError,
        match=r"trained with E-TSDM \(etsdm_threshold=20, etsdm_intervals=4\).*PNDMScheduler has no E-TSDM variant",
    ):
        sample(pipe)
    handle.remove()
    assert seen == []


def test_an_explicit_etsdm_scheduler_is_used_as_is_even_switched_off(warnings_log):
    pipe = etsdm_pipeline()
    pipe.scheduler = ETSDMDDIMScheduler.from_config(pipe.scheduler.config, etsdm_intervals=0)  # on purpose
    seen, handle = condition_hook(pipe.unet)
    sample(pipe)
    handle.remove()
    assert type(pipe.scheduler) is ETSDMDDIMScheduler and not pipe.scheduler.etsdm_enabled
    assert seen == pipe.scheduler.timesteps.tolist() == pipe.scheduler.true_timesteps.tolist()
    assert "instead of" not in warnings_log.text


def test_a_model_trained_without_etsdm_keeps_stock_schedulers():
    pipe = SMDPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=T))
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    sample(pipe, steps=4)
    assert type(pipe.scheduler) is EulerDiscreteScheduler
    assert "etsdm_threshold" not in pipe.scheduler.config


def test_only_methods_that_read_timestep_values_are_translated():
    """A parent step / scale_model_input that finds its start through _init_step_index runs as is (fast);
    the ones that read the timestep's value (or the grid's values) are translated."""
    translated = {parent.__name__: set(v._etsdm_translated_methods) for parent, v in ETSDM_VARIANTS.items()}
    steps_translated = sorted(name for name, methods in translated.items() if "step" in methods)
    assert steps_translated == [
        "DDIMScheduler",
        "DDPMScheduler",
        "LCMScheduler",
        "TCDScheduler",
        "UniPCMultistepScheduler",
    ]
    assert not any("scale_model_input" in methods for methods in translated.values())
    for name, methods in translated.items():
        if name not in ("DDPMScheduler", "DDIMScheduler"):  # the parents that keep a step index
            assert {"_init_step_index", "index_for_timestep"} <= methods, name
        assert methods & {"add_noise", "scale_noise"}, name


def test_a_copied_scheduler_continues_the_loop_exactly():
    """Training scripts deepcopy their scheduler (diffusers' SD3 script); pickling must keep the grids too."""
    import copy
    import pickle

    import torch

    scheduler = ETSDMDDIMScheduler(etsdm_threshold=500, etsdm_intervals=4)
    scheduler.set_timesteps(8)
    x = torch.ones(1, 1, 2, 2)
    for t in scheduler.timesteps[:3]:
        x = scheduler.step(0.1 * x, t, x).prev_sample
    copies = [copy.deepcopy(scheduler), pickle.loads(pickle.dumps(scheduler))]
    results = []
    for s in [scheduler, *copies]:
        y = x.clone()
        for t in s.timesteps[3:]:
            y = s.step(0.1 * y, t, y).prev_sample
        results.append(y)
        assert torch.equal(s.true_timesteps, scheduler.true_timesteps) and s.step_index == 8
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


def test_settings_hold_python_numbers():
    settings = ETSDMSettings(np.int64(100), np.int32(5))
    assert type(settings.threshold) is int and type(settings.intervals) is int
    assert json.dumps(settings.to_config()) == '{"etsdm_threshold": 100, "etsdm_intervals": 5}'
    assert type(ETSDMSettings(np.float32(0.5), 5).threshold) is float
