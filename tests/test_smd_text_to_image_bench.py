"""The SD 1.5 cost benchmark and VRAM calculator: arithmetic on stub figures, the emulation pieces on tiny
modules with hand-counted bytes, the real configurations, and a quick run through the training engine."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import pytest
import torch
import torch.nn.functional as F

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def bench():
    return load("bench_smd_text_to_image")


@pytest.fixture(scope="module")
def vram():
    return load("vram_smd_text_to_image")


# ---------------------------------------------------------------- benchmark arithmetic on stub timings
STEPS = {
    "vanilla": [1.0, 3.0, 2.0],
    "smd": [2.2, 2.4, 9.0],
    "vanilla+gc": [4.0, 4.0, 5.0],
    "smd+gc": [5.2, 4.8, 5.0],
}
PARTS = {
    "vanilla": {"forward": [0.5, 0.5, 0.4], "backward": [1.0, 1.1, 1.0]},
    "smd": {"forward": [0.6, 0.7, 0.6], "backward": [1.3, 1.2, 1.2]},
    "vanilla+gc": {"forward": [0.5, 0.5, 0.5], "backward": [2.0, 2.0, 2.0]},
    "smd+gc": {"forward": [0.6, 0.6, 0.6], "backward": [2.4, 2.5, 2.4]},
}


def test_train_step_summary_takes_medians_and_their_ratios(bench):
    summary = bench.train_step_summary(STEPS, PARTS, target=1.25)
    assert summary["median_step_seconds"] == {"vanilla": 2.0, "smd": 2.4, "vanilla+gc": 4.0, "smd+gc": 5.0}
    assert summary["ratio_smd_over_vanilla"]["no_checkpointing"] == pytest.approx(1.2)
    assert summary["ratio_smd_over_vanilla"]["gradient_checkpointing"] == pytest.approx(1.25)
    # forward + backward: (0.6 + 1.2) / (0.5 + 1.0) and (0.6 + 2.4) / (0.5 + 2.0)
    compute = summary["ratio_forward_backward_smd_over_vanilla"]
    assert compute["no_checkpointing"] == pytest.approx(1.2)
    assert compute["gradient_checkpointing"] == pytest.approx(1.2)
    assert summary["meets_target"]  # 1.2 and 1.25 <= 1.25
    slower = {**STEPS, "smd+gc": [5.1, 5.1, 5.1]}
    assert not bench.train_step_summary(slower, PARTS, target=1.25)["meets_target"]


def test_forward_and_memory_summaries(bench):
    forward = bench.forward_summary(
        {"unet": [1.0, 2.0, 3.0], "smd": [2.1, 2.2, 9.0], "identifier": [0.1, 0.2, 0.1]}, target=1.10
    )
    assert forward["ratio_smd_over_unet"] == pytest.approx(1.1) and forward["meets_target"]
    assert forward["share_of_unet_forward"] == {"identifier": pytest.approx(0.05)}
    mib = 2**20
    train = {
        "vanilla": {"peak": 100 * mib, "growth": 10 * mib},
        "smd": {"peak": 110 * mib, "growth": 15 * mib},
        "vanilla+gc": {"peak": 80 * mib, "growth": 4 * mib},
        "smd+gc": {"peak": 84 * mib, "growth": 5 * mib},
    }
    memory = bench.memory_summary(
        train, {"unet": {"peak": 0, "growth": 8 * mib}, "smd": {"peak": 0, "growth": 9 * mib}}
    )
    assert memory["train_step_peak_ratio"] == {"no_checkpointing": 1.1, "gradient_checkpointing": 1.05}
    assert memory["train_step_growth_ratio"] == {"no_checkpointing": 1.5, "gradient_checkpointing": 1.25}
    assert memory["forward_growth_ratio"] == 1.125
    assert memory["train_step_mib"]["smd+gc"] == {"peak": 84.0, "growth": 5.0}


def test_markdown_table_shows_the_run(bench):
    result = {
        "train_step": bench.train_step_summary(STEPS, PARTS),
        "forward": bench.forward_summary({"unet": [0.5], "smd": [0.52]}),
        "peak_memory": None,
        "parameters": {"unet": 859_520_964, "smd": 863_541_528, "overhead_ratio": 863_541_528 / 859_520_964},
    }
    table = bench.markdown_table(result)
    assert (
        "| train step (`Trainer.step`), gradient checkpointing no | 2.00 s | 2.40 s | 1.200 | <= 1.25 |"
        in table
    )
    assert "| forward, no grad (pipeline call) | 500 ms | 520 ms | 1.040 | <= 1.10 |" in table
    assert "| parameters | 859.5 M | 863.5 M | 1.0047 | |" in table


# ---------------------------------------------------------------- the configurations are the real ones
def test_the_unet_is_stable_diffusion_15_and_the_smd_sizes_are_the_package_defaults(bench):
    from diffusers import UNet2DConditionModel

    from diffusers_smd import SMDUNet2DConditionModel
    from diffusers_smd.training import TrainingConfig

    cfg = bench.setting(quick=False)
    assert cfg["smd"] == TrainingConfig().smd_config() == {"latent_dim": 32, "num_hypernet_layers": 2}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg["unet"])
        smd = SMDUNet2DConditionModel.from_unet(unet, **cfg["smd"])
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964  # SD 1.5's published UNet size
    assert smd.config.identifier_block_out_channels == [80, 160]  # 1/4 of (320, 640)
    assert cfg["latent_size"] == 16 and cfg["text"] == {"tokens": 77, "dim": 768}


def test_vram_models_are_the_published_vae_and_text_encoder(vram):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        vae = AutoencoderKL(**vram.SD15_VAE_CONFIG)
        text_encoder = CLIPTextModel(CLIPTextConfig(**vram.SD15_TEXT_ENCODER_CONFIG))
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    assert sum(p.numel() for p in text_encoder.parameters()) == 123_060_480


# ---------------------------------------------------------------- the VRAM pieces, bytes counted by hand
def test_live_memory_counts_allocations_until_they_are_freed(vram):
    with torch.device("meta"):
        linear = torch.nn.Linear(1000, 1000)
    x = torch.empty(64, 1000, device="meta")
    tracker = vram.LiveMemory()
    with tracker:
        y = linear(x)  # 64 x 1000 float32
        y.view(-1).add_(1.0)  # views and in-place ops allocate nothing
        assert tracker.live == 256_000
        z = torch.relu(y)
        assert tracker.live == 2 * 256_000
        del y  # linear keeps x and its weight for backward, not y
        assert tracker.live == 256_000 and tracker.peak == 512_000
        tracker.reset_peak()
        z.sum().backward()
        del z
    assert tracker.live == 4_000_000 + 4_000  # the weight and bias gradients remain
    assert tracker.peak >= tracker.live + 256_000


def test_emulated_autocast_follows_the_cuda_casting_rules(vram):
    with torch.device("meta"):
        conv = torch.nn.Conv2d(4, 8, 3, padding=1)
        norm = torch.nn.GroupNorm(4, 8)
        linear = torch.nn.Linear(8, 8)
    x = torch.empty(2, 4, 16, 16, device="meta")
    tracker = vram.LiveMemory()
    with tracker, vram.GPUEmulation(torch.float16):
        h = conv(x)
        assert h.dtype == torch.float16
        n = norm(h)
        assert n.dtype == torch.float32  # group_norm runs in float32
        assert (h + n).dtype == torch.float32  # other ops follow type promotion
        assert F.softplus(torch.zeros(3, device="meta", dtype=torch.float16)).dtype == torch.float32
        tokens = torch.empty(5, 8, device="meta")
        before = tracker.live
        outputs = linear(tokens), linear(tokens)
        # one cached float16 copy of the weight and bias; the input is cast anew by each call and kept for
        # backward with each float16 output
        weight_copies = (64 + 8) * 2
        assert tracker.live - before == weight_copies + 2 * (5 * 8 * 2) + 2 * (5 * 8 * 2)
        assert {output.dtype for output in outputs} == {torch.float16}


def test_emulated_attention_keeps_no_attention_matrix(vram):
    q = torch.empty(1, 8, 4096, 40, device="meta", requires_grad=True)
    tracker = vram.LiveMemory()
    with tracker, vram.GPUEmulation():
        out = F.scaled_dot_product_attention(q, q, q)
    assert out.shape == q.shape
    assert tracker.peak == 8 * 4096 * 40 * 4 + 8 * 4096 * 4  # output and float32 log-sum-exp
    assert tracker.peak < 8 * 4096 * 4096 * 4 / 50  # the math kernel's attention matrix would be 512 MiB
    with tracker:
        out.sum().backward()
    assert q.grad.shape == q.shape


def test_emulated_checkpointing_recomputes_under_the_same_emulation(vram):
    with torch.device("meta"):
        block = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU())
    seen = []
    block[0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    x = torch.empty(1, 4, 8, 8, device="meta", requires_grad=True)
    checkpoint = vram.emulated_checkpointing(torch.float16)
    with vram.GPUEmulation(torch.float16):
        y = checkpoint(block, x)
    y.float().sum().backward()
    assert seen == [torch.float16, torch.float16]  # forward, then the recomputation in backward
    plain = []
    block[0]._forward_hooks.clear()
    block[0].register_forward_hook(lambda module, args, out: plain.append(out.dtype))
    vram.emulated_checkpointing(None)(block, x).sum().backward()
    assert plain == [torch.float32, torch.float32]


def test_vram_arithmetic_and_table_on_stub_rows(vram):
    gib = 2**30
    small = {"batch_size": 1, "saved_activation_bytes": 3 * gib}
    large = {"batch_size": 4, "saved_activation_bytes": 9 * gib}
    assert vram.activation_bytes_per_image(small, large) == 2 * gib
    row = {
        "option": {"lora": True, "smd": True, "gradient_checkpointing": False, "precision": "fp16"},
        "resident_bytes": {
            "trained_weights": gib,
            "frozen_weights": 2 * gib,
            "buffers": 0,
            "adamw_state": gib,
        },
        "saved_activation_bytes_per_image": 0.5 * gib,
        "total_peak_bytes": 5.25 * gib,
        "peak_phase": "backward",
        f"batch_{vram.LARGER_BATCH}": {"total_peak_bytes": 6.75 * gib, "peak_phase": "backward"},
    }
    table = vram.markdown_table([row])
    assert (
        "| LoRA r4 + SMD modules | fp16 mixed | no | 4.00 | 0.50 | **5.2** (backward) | **6.8** (backward) |"
        in table
    )
    assert len(vram.options()) == 16 and len({json.dumps(o, sort_keys=True) for o in vram.options()}) == 16


# ---------------------------------------------------------------- a quick run through the training engine
def test_quick_run_times_engine_steps_of_one_shared_unet(bench, tmp_path):
    from diffusers_smd import SMDUNet2DConditionModel

    output = tmp_path / "quick.json"
    result = bench.main(["--quick", "--output", str(output)])
    written = json.loads(output.read_text())
    assert set(written["train_step"]["median_step_seconds"]) == {"vanilla", "smd", "vanilla+gc", "smd+gc"}
    assert all(seconds > 0 for seconds in written["train_step"]["median_step_seconds"].values())
    for parts in written["train_step"]["median_part_seconds"].values():
        assert parts["forward"] > 0 and parts["backward"] > 0
    # Parameter counts against models built here, independently of the benchmark's own.
    unet, _ = bench.build_models(bench.setting(quick=True), wrap=False)
    smd = SMDUNet2DConditionModel.from_unet(unet, latent_dim=32, num_hypernet_layers=2)
    assert written["parameters"]["unet"] == sum(p.numel() for p in unet.parameters())
    assert written["parameters"]["smd"] == sum(p.numel() for p in smd.parameters())
    assert result["setting"]["smd"]["latent_dim"] == 32
