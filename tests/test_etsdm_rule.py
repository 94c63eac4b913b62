"""The E-TSDM rule f(t) against hand-computed values and an independent formula."""

import json

import numpy as np
import pytest
import torch

from diffusers_smd import (
    DEFAULT_ETSDM_INTERVALS,
    ETSDMDDPMScheduler,
    ETSDMSettings,
    default_etsdm_threshold,
    resolve_etsdm_settings,
    share_timesteps,
)
from tests.pipeline_testing import reference_condition


def reference_rule(t: int, threshold: int, intervals: int) -> int:
    """Hand-written rule for divisible settings: left end of a width threshold/intervals bucket."""
    width = threshold // intervals
    return t if t >= threshold else (t // width) * width


def test_paper_values_for_1000_steps():
    expected = {**dict.fromkeys(range(0, 20), 0), **dict.fromkeys(range(20, 40), 20)}
    expected.update({**dict.fromkeys(range(40, 60), 40), **dict.fromkeys(range(60, 80), 60)})
    expected.update({**dict.fromkeys(range(80, 100), 80), 100: 100, 101: 101, 999: 999})
    t = torch.tensor(list(expected))
    assert share_timesteps(t, 100, 5).tolist() == list(expected.values())
    for value, condition in expected.items():
        assert share_timesteps(value, 100, 5) == condition


@pytest.mark.parametrize(("num_train_timesteps", "intervals"), [(500, 5), (200, 4), (4000, 8)])
def test_other_num_train_timesteps_scale_the_threshold(num_train_timesteps, intervals):
    threshold = num_train_timesteps // 10
    t = torch.arange(num_train_timesteps)
    expected = [reference_rule(v, threshold, intervals) for v in range(num_train_timesteps)]
    assert share_timesteps(t, threshold, intervals).tolist() == expected
    # T=500: 0-9 -> 0, 10-19 -> 10, ..., 40-49 -> 40, 50 -> 50
    if num_train_timesteps == 500:
        assert share_timesteps(torch.tensor([0, 9, 10, 19, 49, 50]), 50, 5).tolist() == [0, 0, 10, 10, 40, 50]


def test_integer_rule_when_intervals_do_not_divide_the_threshold():
    # width 100/3: sub-intervals [0, 33.3), [33.3, 66.7), [66.7, 100); first integers 0, 34, 67
    t = torch.tensor([0, 33, 34, 66, 67, 99, 100])
    assert share_timesteps(t, 100, 3).tolist() == [0, 0, 34, 34, 67, 67, 100]


def test_float_timesteps_in_continuous_time():
    t = torch.tensor([0.0, 0.01, 0.02, 0.039, 0.06, 0.0999, 0.1, 0.5], dtype=torch.float64)
    expected = torch.tensor([0.0, 0.0, 0.02, 0.02, 0.06, 0.08, 0.1, 0.5], dtype=torch.float64)
    out = share_timesteps(t, 0.1, 5)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected)
    # binary-exact case: width 1/8
    t32 = torch.tensor([0.0, 0.1, 0.125, 0.3, 0.49, 0.5, 0.75])
    out32 = share_timesteps(t32, 0.5, 4)
    assert out32.dtype == torch.float32
    assert out32.tolist() == [0.0, 0.0, 0.125, 0.25, 0.375, 0.5, 0.75]
    assert share_timesteps(0.06, 0.1, 5) == pytest.approx(0.06)
    assert isinstance(share_timesteps(0.03, 0.1, 5), float)


def test_float_timesteps_of_a_discrete_schedule_and_dtypes_are_kept():
    t = torch.tensor([[5.0, 25.0], [99.5, 100.0]], dtype=torch.float16)
    out = share_timesteps(t, 100, 5)
    assert out.dtype == torch.float16 and out.shape == (2, 2)
    assert out.tolist() == [[0.0, 20.0], [80.0, 100.0]]
    for dtype in (torch.int32, torch.int64, torch.uint8):
        out = share_timesteps(torch.tensor([7, 45, 120], dtype=dtype), 100, 5)
        assert out.dtype == dtype and out.tolist() == [0, 40, 120]


def test_zero_switches_the_rule_off():
    t = torch.arange(0, 200)
    assert torch.equal(share_timesteps(t, 0, 5), t)
    assert torch.equal(share_timesteps(t, 100, 0), t)


def test_meta_device_and_batches():
    t = torch.randint(0, 1000, (4, 3), device="meta")
    assert share_timesteps(t, 100, 5).device.type == "meta"


@pytest.mark.parametrize(
    ("threshold", "intervals", "timesteps", "match"),
    [
        (-1, 5, 3, "threshold"),
        (100, -2, 3, "intervals"),
        (100, 2.5, 3, "intervals"),
        (100.0, 5, 3, "threshold"),  # integer timesteps need an integer threshold
        (3, 5, 3, r"\[0, 3\]"),
        (float("nan"), 5, 0.3, "threshold"),
        (True, 5, 3, "threshold"),
    ],
)
def test_bad_rule_settings(threshold, intervals, timesteps, match):
    with pytest.raises(ValueError, match=match):
        share_timesteps(timesteps, threshold, intervals)


def test_bad_timesteps_type():
    with pytest.raises(TypeError, match="timesteps"):
        share_timesteps("10", 100, 5)
    with pytest.raises(TypeError, match="timesteps"):
        share_timesteps(torch.tensor([True]), 100, 5)


def test_resolve_settings_resolves_and_rejects():
    assert resolve_etsdm_settings(None, 5, 1000) == ETSDMSettings(100, 5)
    assert resolve_etsdm_settings(None, 0, 1000) == ETSDMSettings(100, 0)
    assert resolve_etsdm_settings(0, 5, 1000) == ETSDMSettings(0, 5)
    with pytest.raises(ValueError, match=r"etsdm_threshold.*\[0, num_train_timesteps=1000\]"):
        resolve_etsdm_settings(1001, 5, 1000)
    with pytest.raises(ValueError, match="etsdm_intervals"):
        resolve_etsdm_settings(None, 5, 30)  # default threshold 3 holds only 3 integer sub-intervals


# ---- narrow integer dtypes (issue 13 and issue 17, item 3) --------------------------------------------------
@pytest.mark.parametrize(
    ("dtype", "values", "threshold", "intervals", "expected"),
    [
        (torch.uint8, [45, 52, 60, 75, 99], 100, 5, [40, 40, 60, 60, 80]),  # gave [40, 0, 0, 20, 40]
        (torch.int16, [399], 400, 100, [396]),  # gave -260
        (torch.uint8, [52, 60, 99], 100, 5, [40, 60, 80]),  # gave [0, 0, 40]
        (torch.int16, [7000, 10000], 20000, 5, [4000, 8000]),  # gave [5108, -4000]
        (torch.int8, [127, 99, 3], 100, 5, [127, 80, 0]),
        (
            torch.int32,
            [2**31 - 1, 2**30],
            2**31 - 1,
            7,
            [2**31 - 1, (2**30 * 7 // (2**31 - 1)) * (2**31 - 1) // 7 + 1],
        ),
    ],
)
def test_narrow_integer_dtypes_do_not_overflow(dtype, values, threshold, intervals, expected):
    t = torch.tensor(values, dtype=dtype)
    out = share_timesteps(t, threshold, intervals)
    assert out.dtype == dtype and out.tolist() == expected
    assert out.tolist() == [reference_condition(v, threshold, intervals) for v in values]
    settings = ETSDMSettings(threshold, intervals)
    assert settings.condition_timesteps(t).tolist() == expected  # what condition_timesteps inherits
    if threshold <= 20000:
        scheduler = ETSDMDDPMScheduler(
            num_train_timesteps=max(threshold, 1000), etsdm_threshold=threshold, etsdm_intervals=intervals
        )
        assert scheduler.condition_timesteps(t).tolist() == expected


# ---- negative timesteps (issue 17: condition_timesteps(-5) returned -20) ------------------------------
@pytest.mark.parametrize("bad", [-5, -0.5, torch.tensor([3, -1]), torch.tensor([-20.0])])
def test_negative_timesteps_raise(bad):
    with pytest.raises(ValueError, match=r"`timesteps` must be >= 0"):
        share_timesteps(bad, 100, 5)
    with pytest.raises(ValueError, match=r"`timesteps` must be >= 0"):
        ETSDMDDPMScheduler().condition_timesteps(bad)
    with pytest.raises(ValueError, match=r"`timesteps` must be >= 0"):
        ETSDMDDPMScheduler(etsdm_intervals=0).condition_timesteps(bad)  # also with E-TSDM off


# ---- one settings rule ------------------------------------------------------------------------------
def test_default_threshold_is_a_tenth_of_the_range():
    assert default_etsdm_threshold(1000) == 100 and isinstance(default_etsdm_threshold(1000), int)
    assert default_etsdm_threshold(999) == 99
    assert default_etsdm_threshold(1000, integer_timesteps=False) == 100.0
    assert default_etsdm_threshold(1, integer_timesteps=False) == 0.1
    assert DEFAULT_ETSDM_INTERVALS == 5


@pytest.mark.parametrize("num_train_timesteps", [1, 5, 9, 10, 30, 49])
def test_schedules_too_short_for_the_default_threshold_raise_one_clear_error(num_train_timesteps):
    # before: T < 10 silently switched E-TSDM off (threshold 0), T = 10..49 raised
    with pytest.raises(ValueError) as error:
        resolve_etsdm_settings(None, 5, num_train_timesteps)
    message = str(error.value)
    for part in (
        "`etsdm_intervals`=5",
        "`etsdm_threshold`",
        f"num_train_timesteps={num_train_timesteps}",
        "[0, ",
    ):
        assert part in message
    assert f"num_train_timesteps // 10 = {num_train_timesteps // 10}" in message
    if num_train_timesteps >= 5:
        assert f"[5, {num_train_timesteps}]" in message  # the thresholds that would work
    # switching off explicitly is always allowed, and so is a threshold that fits
    assert not resolve_etsdm_settings(0, 5, num_train_timesteps).enabled
    assert not resolve_etsdm_settings(None, 0, num_train_timesteps).enabled
    if num_train_timesteps >= 5:
        assert resolve_etsdm_settings(5, 5, num_train_timesteps) == ETSDMSettings(5, 5)
    assert resolve_etsdm_settings(None, 5, 50) == ETSDMSettings(5, 5)


@pytest.mark.parametrize(
    ("threshold", "intervals", "num_train_timesteps", "integer", "match"),
    [
        (-1, 5, 1000, True, r"`etsdm_threshold` must be an integer in \[0, num_train_timesteps=1000\]"),
        (100.0, 5, 1000, True, r"`etsdm_threshold` must be None .* or an integer"),
        (True, 5, 1000, True, "etsdm_threshold"),
        ("100", 5, 1000, True, "etsdm_threshold"),
        (100, -1, 1000, True, r"`etsdm_intervals` must be an integer >= 0"),
        (100, 2.0, 1000, True, "etsdm_intervals"),
        (100, None, 1000, True, "etsdm_intervals"),
        (10, 11, 1000, True, r"`etsdm_intervals` must be in \[0, 10\].*`etsdm_threshold` in \[11, 1000\]"),
        (100, 5, 0, True, "num_train_timesteps"),
        (100, 5, 1000.0, True, "num_train_timesteps"),
        (float("nan"), 5, 1000, False, "etsdm_threshold"),
        (float("inf"), 5, 1000, False, "etsdm_threshold"),
        (-0.5, 5, 1000, False, r"`etsdm_threshold` must be a number in \[0, num_train_timesteps=1000\]"),
        (1000.5, 5, 1000, False, "etsdm_threshold"),
        (0.1, 5, 0, False, "num_train_timesteps"),
    ],
)
def test_bad_settings_name_the_setting_and_the_allowed_values(
    threshold, intervals, num_train_timesteps, integer, match
):
    with pytest.raises(ValueError, match=match):
        resolve_etsdm_settings(threshold, intervals, num_train_timesteps, integer_timesteps=integer)


def test_float_timesteps_take_float_thresholds_and_any_number_of_intervals():
    assert resolve_etsdm_settings(None, 5, 1000, integer_timesteps=False) == ETSDMSettings(100.0, 5)
    assert resolve_etsdm_settings(0.1, 7, 1, integer_timesteps=False) == ETSDMSettings(0.1, 7)
    assert resolve_etsdm_settings(2, 50, 1000, integer_timesteps=False) == ETSDMSettings(2.0, 50)


def test_numpy_numbers_are_accepted_and_stored_as_python_numbers(tmp_path):
    settings = resolve_etsdm_settings(np.int64(100), np.int32(5), np.int64(1000))
    assert settings == ETSDMSettings(100, 5)
    assert type(settings.threshold) is int and type(settings.intervals) is int
    assert json.loads(json.dumps(settings.to_config())) == {"etsdm_threshold": 100, "etsdm_intervals": 5}
    flow = resolve_etsdm_settings(np.float32(50.0), np.int64(5), 1000, integer_timesteps=False)
    assert type(flow.threshold) is float and flow.threshold == 50.0
    assert share_timesteps(np.int64(45), np.int64(100), np.int64(5)) == 40
    # issue 17: etsdm_threshold=np.int64(100) was accepted, and save_pretrained then failed
    scheduler = ETSDMDDPMScheduler(etsdm_threshold=np.int64(100), etsdm_intervals=np.int64(5))
    scheduler.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert (saved["etsdm_threshold"], saved["etsdm_intervals"]) == (100, 5)
    assert ETSDMDDPMScheduler.from_pretrained(tmp_path).etsdm_settings == ETSDMSettings(100, 5)


def test_settings_record():
    settings = ETSDMSettings(100, 5)
    assert settings.enabled and not ETSDMSettings(0, 5).enabled and not ETSDMSettings(100, 0).enabled
    assert settings.to_config() == {"etsdm_threshold": 100, "etsdm_intervals": 5}
    threshold, intervals = settings  # unpacks like the (threshold, intervals) tuple of diffusers-smd 0.1
    assert (threshold, intervals) == (100, 5) and settings == (100, 5) and settings != (100, 4)
    assert hash(settings) == hash(ETSDMSettings(100, 5))
    assert settings.condition_timesteps(torch.tensor([19, 20, 100])).tolist() == [0, 20, 100]
