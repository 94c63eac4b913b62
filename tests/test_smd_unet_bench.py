"""The SMD forward benchmark: its arithmetic on stub timings, its configuration, and a --quick smoke run."""

import importlib.util
import json
import pathlib

import pytest
import torch

from diffusers_smd.models import SMDUNet2DModel

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_smd_forward.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_smd_forward", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StubClock:
    """A clock that only the stub calls advance: each call to a named function takes a scripted time."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def call_taking(self, durations, log, name):
        durations = iter(durations)

        def call():
            log.append(name)
            self.now += next(durations)

        return call


def test_interleaved_medians_time_each_call_in_turn_after_the_warmup():
    bench = load_bench()
    clock, log = StubClock(), []
    calls = {
        "unet": clock.call_taking([99.0, 2.0, 1.0, 3.0], log, "unet"),  # first: warm-up, not timed
        "smd": clock.call_taking([99.0, 2.5, 2.0, 9.0], log, "smd"),
    }
    medians = bench.interleaved_medians(calls, repeats=3, warmup=1, clock=clock)
    assert medians == {"unet": 2.0, "smd": 2.5}
    assert log == ["unet", "smd"] * 4  # interleaved: load hits both alike


def test_summaries_are_the_ratios_of_the_stub_figures():
    bench = load_bench()
    times = {"unet": 2.0, "smd": 2.2, "identifier": 0.1, "hypernetworks": 0.05}
    parameters = {"unet": 1000, "smd": 1021, "identifier": 15, "hypernetworks": 6}
    summary = bench.summarize_times(times, parameters)
    assert summary["time_ratio"] == pytest.approx(1.1)
    assert summary["overhead_share"] == pytest.approx({"identifier": 0.05, "hypernetworks": 0.025})
    assert summary["parameters"]["overhead_ratio"] == pytest.approx(1.021)
    assert summary["median_seconds"] == times
    mib = 2**20
    memory = bench.summarize_memory(
        {"unet": [10 * mib, 30 * mib, 12 * mib], "smd": [11 * mib, 13 * mib, 99 * mib]}, 3
    )
    assert memory["unet_peak_growth_mib"] == 12 and memory["smd_peak_growth_mib"] == 13  # medians
    assert memory["ratio"] == pytest.approx(13 / 12)


def test_quick_benchmark_runs_and_counts_parameters_of_the_models_it_built(tmp_path):
    bench = load_bench()
    result = bench.main(["--quick", "--repeats", "1", "--output", str(tmp_path / "out.json")])
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["quick"] is True and saved["time_ratio"] > 0
    assert set(saved["median_seconds"]) == {"unet", "smd", "identifier", "hypernetworks"}
    # Parameter counts of independently built models: the plain UNet, and the SMD model = UNet + its modules.
    unet, smd, _, _ = bench.build(quick=True)
    assert saved["parameters"]["unet"] == sum(p.numel() for p in unet.parameters())
    assert saved["parameters"]["smd"] == sum(p.numel() for p in smd.parameters())
    parts = saved["parameters"]["identifier"] + saved["parameters"]["hypernetworks"]
    assert saved["parameters"]["smd"] == saved["parameters"]["unet"] + parts
    assert result["parameters"] == saved["parameters"]


def test_benchmark_configuration_is_the_ddpm_cifar10_layout():
    bench = load_bench()
    cfg = bench.setting(quick=False)
    assert cfg["unet"]["block_out_channels"] == (128, 256, 256, 256)
    assert cfg["unet"]["sample_size"] == 32 and cfg["batch_size"] == 8
    assert cfg["latent_dim"] == 100 and cfg["num_hypernet_layers"] == 2
    # The default identifier is about 1/4 of the denoiser's width with two resolution stages.
    with torch.device("meta"):
        smd = SMDUNet2DModel(unet_config=dict(cfg["unet"]), latent_dim=100)
    assert smd.config.identifier_block_out_channels == [32, 64]
