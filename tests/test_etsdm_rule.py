"""The E-TSDM rule f(t) against hand-computed values and an independent formula."""

import pytest
import torch

from diffusers_smd import ETSDMSettings, resolve_etsdm_settings, share_timesteps


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
