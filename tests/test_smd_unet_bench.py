import importlib.util
import json
import pathlib

import torch

from diffusers_smd.models import SMDUNet2DModel

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_smd_forward.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_smd_forward", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_writes_consistent_json(tmp_path):
    bench = load_bench()
    result = bench.main(["--quick", "--repeats", "1", "--output", str(tmp_path / "out.json")])
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["time_ratio"] == result["time_ratio"] > 0
    times = saved["median_seconds"]
    assert saved["time_ratio"] == times["smd"] / times["unet"]
    # Parameter overhead counted independently: the plain UNet vs the same UNet wrapped.
    unet, smd, _, _ = bench.build(quick=True)
    assert saved["parameters"]["unet"] == sum(p.numel() for p in unet.parameters())
    assert saved["parameters"]["smd"] == sum(p.numel() for p in smd.parameters())
    assert saved["parameters"]["overhead_ratio"] > 1


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
