"""GPU memory a Stable Diffusion 1.5 fine-tune needs at 512 px, per option, computed on the meta device.

No GPU is needed: the real SD 1.5 models (UNet, VAE, CLIP ViT-L/14 text encoder; configs as published) are
built on torch's ``meta`` device, which has shapes and dtypes but no data, and one training step in the shape of
diffusers' ``examples/text_to_image/train_text_to_image.py`` (and ``train_text_to_image_lora.py``) is run on
them: VAE encode + text encode without gradients, noise, UNet forward, MSE, backward, gradient clipping, AdamW.
A dispatch-level tracker adds the bytes of every storage the step allocates and subtracts them when the storage
is freed; its maximum is the step's peak on top of what stays resident (weights, AdamW state).

What a GPU does differently from the meta device is emulated, explicitly:

* attention: CUDA runs ``scaled_dot_product_attention`` with the flash / memory-efficient kernels, which keep
  q, k, v, the output and a float32 log-sum-exp for backward, never the attention matrix; the emulation
  saves exactly those;
* fp16 mixed precision (``--mixed_precision fp16``, accelerate autocast around the UNet forward): the CUDA
  autocast op lists (matmul / conv / linear / attention in float16, normalisations, softmax, softplus,
  exp / log / pow / sum in float32; other ops follow type promotion), float16 weight copies cached for the
  forward as autocast does; the frozen VAE and text encoder are stored in float16, as the diffusers scripts do;
* gradient checkpointing: diffusers' own (``enable_gradient_checkpointing``); the recomputation runs under
  the same emulation (``torch.utils.checkpoint``'s ``context_fn``);
* AdamW: torch's default on CUDA (``foreach``), whose step holds one float32 temporary per parameter.

Not counted: the CUDA context and kernels (several hundred MiB), allocator fragmentation and cuDNN/cuBLAS
workspaces (typically 5-15 % on top), EMA (``--use_ema`` adds one float32 copy of the trained weights).

    python benchmarks/vram_smd_text_to_image.py      # writes benchmarks/results/smd_text_to_image_vram.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import pathlib
import sys
import time
import weakref

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from bench_smd_text_to_image import SD15_NOISE_SCHEDULE, SD15_TEXT, SD15_UNET_CONFIG  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
GIB = 2.0**30
LARGER_BATCH = 4

#: runwayml/stable-diffusion-v1-5 vae/config.json
SD15_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
#: runwayml/stable-diffusion-v1-5 text_encoder/config.json (CLIP ViT-L/14 text tower)
SD15_TEXT_ENCODER_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
#: diffusers' train_text_to_image_lora.py adapter
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]

# CUDA autocast op lists (torch "Automatic Mixed Precision" op reference), by function name.
LOWER_PRECISION_OPS = {
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "linear", "matmul", "__matmul__", "mm", "bmm", "baddbmm", "addmm", "addbmm", "addmv", "addr", "mv",
    "prelu", "chain_matmul", "multi_dot",
}  # fmt: skip
FLOAT32_OPS = {
    "group_norm", "layer_norm", "norm", "normalize", "softmax", "log_softmax", "softmin", "softplus",
    "exp", "expm1", "log", "log1p", "log2", "log10", "pow", "__pow__", "__rpow__", "reciprocal", "rsqrt",
    "sum", "prod", "cumsum", "cumprod", "mse_loss", "l1_loss", "cosine_similarity", "erfinv", "acos", "asin",
    "cosh", "sinh", "tan", "dist", "cdist", "pdist", "renorm",
}  # fmt: skip


# ---------------------------------------------------------------- the memory tracker
class LiveMemory(TorchDispatchMode):
    """Bytes of the storages allocated while active and still alive; ``peak`` is their maximum.

    A storage counts from the op that creates it (an output whose storage is none of the op's inputs') until
    it is freed (a finalizer on the storage), so views and in-place ops add nothing.
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def reset_peak(self) -> None:
        self.peak = self.live

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
        }
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage._cdata
            if key in inputs or key in self._sizes:
                continue
            self._sizes[key] = storage.nbytes()
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key)
        return out


# ---------------------------------------------------------------- what CUDA does that meta does not
class _MemoryEfficientAttention(torch.autograd.Function):
    """Flash / memory-efficient attention's memory: keeps q, k, v, out and a float32 log-sum-exp."""

    @staticmethod
    def forward(ctx, query, key, value):
        out = query.new_empty((*query.shape[:-1], value.shape[-1]))
        logsumexp = query.new_empty(query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, logsumexp)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, _, _ = ctx.saved_tensors
        return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)


class GPUEmulation(TorchFunctionMode):
    """CUDA's attention kernels always; with ``autocast_dtype``, CUDA autocast's casting rules too."""

    def __init__(self, autocast_dtype: torch.dtype | None = None):
        super().__init__()
        self.autocast_dtype = autocast_dtype
        self._weight_casts: dict[int, torch.Tensor] = {}

    def _cast(self, value, dtype: torch.dtype):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dtype == dtype:
            return value
        if value.is_leaf and value.requires_grad:  # autocast caches its casts of trainable weights
            key = id(value)
            if key not in self._weight_casts:
                self._weight_casts[key] = value.to(dtype)
            return self._weight_casts[key]
        return value.to(dtype)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        lower = self.autocast_dtype
        if name == "scaled_dot_product_attention":
            query, key, value = args[:3]
            if kwargs.get("attn_mask") is not None or len(args) > 3:
                raise NotImplementedError("attention masks are not emulated")
            if lower is not None:
                query, key, value = (self._cast(t, lower) for t in (query, key, value))
            return _MemoryEfficientAttention.apply(query, key, value)
        if lower is not None and name in LOWER_PRECISION_OPS:
            args, kwargs = tree_map(functools.partial(self._cast, dtype=lower), (args, kwargs))
        elif lower is not None and name in FLOAT32_OPS:
            args, kwargs = tree_map(functools.partial(self._cast, dtype=torch.float32), (args, kwargs))
        return func(*args, **kwargs)


def emulated_checkpointing(autocast_dtype: torch.dtype | None):
    """diffusers' gradient-checkpointing function, with the recomputation under the same GPU emulation."""

    def checkpoint(module, *args):
        return torch.utils.checkpoint.checkpoint(
            module.__call__,
            *args,
            use_reentrant=False,
            context_fn=lambda: (contextlib.nullcontext(), GPUEmulation(autocast_dtype)),
        )

    return checkpoint


# ---------------------------------------------------------------- the models and one training step
def build(option: dict):
    """(unet or SMD model, vae, text encoder, trainable parameters) on the meta device for ``option``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from diffusers_smd import SMDUNet2DConditionModel
    from diffusers_smd.training import TrainingConfig

    mixed = option["precision"] == "fp16"
    weight_dtype = torch.float16 if mixed else torch.float32
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        vae = AutoencoderKL(**SD15_VAE_CONFIG).to(weight_dtype).requires_grad_(False)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT_ENCODER_CONFIG)).to(weight_dtype)
        text_encoder.requires_grad_(False)
        if option["lora"]:
            from peft import LoraConfig

            unet.requires_grad_(False)
            unet.to(weight_dtype)  # the LoRA script keeps the frozen base in the weight dtype
            unet.add_adapter(
                LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=LORA_TARGETS)
            )
            for parameter in unet.parameters():
                if parameter.requires_grad:
                    parameter.data = parameter.data.float()  # diffusers' cast_training_params
        model = unet
        if option["smd"]:
            model = SMDUNet2DConditionModel.from_unet(unet, **TrainingConfig().smd_config())
            for module in (model.identifier, model.hypernet_in, model.hypernet_out):
                module.float().requires_grad_(True)  # the SMD modules are trained in full, in float32
    if option["gradient_checkpointing"]:
        model.enable_gradient_checkpointing(emulated_checkpointing(weight_dtype if mixed else None))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    return model, vae, text_encoder, trainable


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def training_step(option: dict, model, vae, text_encoder, trainable, optimizer, tracker: LiveMemory, batch):
    """One step as diffusers' text-to-image scripts take it; returns the tracker's peak per phase."""
    from diffusers import DDPMScheduler

    mixed = option["precision"] == "fp16"
    weight_dtype = torch.float16 if mixed else torch.float32
    peaks: dict[str, int] = {}

    def phase(name: str):
        peaks[name] = tracker.peak
        tracker.reset_peak()

    scheduler = DDPMScheduler(**SD15_NOISE_SCHEDULE)
    pixels = torch.empty(batch, 3, 512, 512, device="meta", dtype=weight_dtype)
    input_ids = torch.zeros(batch, SD15_TEXT["tokens"], dtype=torch.long, device="meta")
    with torch.no_grad(), GPUEmulation():
        latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
        encoder_hidden_states = text_encoder(input_ids, return_dict=False)[0]
    phase("encode")
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, 1000, (batch,), device="meta")
    noisy = scheduler.add_noise(latents, noise, timesteps)
    with GPUEmulation(weight_dtype if mixed else None):
        prediction = model(noisy, timesteps, encoder_hidden_states).sample
    saved = tracker.live
    phase("forward")
    loss = F.mse_loss(prediction.float(), noise.float())
    del prediction
    loss.backward()
    phase("backward")
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    phase("optimizer")
    return peaks, saved


def measure(option: dict, batch: int = 1) -> dict:
    """Resident bytes, the tracked step's peak per phase, and the resulting total for ``option``."""
    model, vae, text_encoder, trainable = build(option)
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, foreach=True)
    for parameter in trainable:  # one update with zero gradients creates the AdamW state
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    state = [
        t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor) and t.is_meta
    ]
    resident = {
        "trained_weights": nbytes(trainable),
        "frozen_weights": nbytes(p for p in model.parameters() if not p.requires_grad)
        + nbytes(vae.parameters())
        + nbytes(text_encoder.parameters()),
        "buffers": nbytes(model.buffers()) + nbytes(vae.buffers()) + nbytes(text_encoder.buffers()),
        "adamw_state": nbytes(state),
    }
    tracker = LiveMemory()
    with tracker:
        peaks, saved = training_step(option, model, vae, text_encoder, trainable, optimizer, tracker, batch)
    resident_total = sum(resident.values())
    return {
        "option": option,
        "batch_size": batch,
        "trained_parameters": sum(p.numel() for p in trainable),
        "resident_bytes": resident,
        "saved_activation_bytes": saved,
        "step_peak_bytes": peaks,
        "total_peak_bytes": resident_total + max(peaks.values()),
        "peak_phase": max(peaks, key=peaks.get),
    }


def activation_bytes_per_image(small: dict, large: dict) -> float:
    """Saved activations added by each extra image: the slope between two batch sizes."""
    return (large["saved_activation_bytes"] - small["saved_activation_bytes"]) / (
        large["batch_size"] - small["batch_size"]
    )


def options() -> list[dict]:
    return [
        {"lora": lora, "smd": smd, "gradient_checkpointing": checkpointing, "precision": precision}
        for lora in (False, True)
        for precision in ("fp32", "fp16")
        for checkpointing in (False, True)
        for smd in (False, True)
    ]


def label(option: dict) -> str:
    return (
        f"{'LoRA r4' if option['lora'] else 'full'} {'SMD' if option['smd'] else 'vanilla'}, "
        f"{option['precision']}{' mixed' if option['precision'] == 'fp16' else ''}, "
        f"checkpointing {'on' if option['gradient_checkpointing'] else 'off'}"
    )


def fine_tune_name(option: dict) -> str:
    if option["lora"]:
        return "LoRA r4 + SMD modules" if option["smd"] else "LoRA r4"
    return "full, SMD" if option["smd"] else "full, vanilla"


def markdown_table(rows: list[dict]) -> str:
    """Docs table: one line per option, GiB (2^30 bytes)."""
    lines = [
        "| fine-tune | precision | gradient checkpointing | weights + AdamW state | saved activations per image "
        f"| total, batch 1 | total, batch {LARGER_BATCH} |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        option, larger = row["option"], row[f"batch_{LARGER_BATCH}"]
        resident = sum(row["resident_bytes"].values())
        lines.append(
            f"| {fine_tune_name(option)} | {'fp16 mixed' if option['precision'] == 'fp16' else 'fp32'} "
            f"| {'yes' if option['gradient_checkpointing'] else 'no'} | {resident / GIB:.2f} "
            f"| {row['saved_activation_bytes_per_image'] / GIB:.2f} "
            f"| **{row['total_peak_bytes'] / GIB:.1f}** ({row['peak_phase']}) "
            f"| **{larger['total_peak_bytes'] / GIB:.1f}** ({larger['peak_phase']}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS / "smd_text_to_image_vram.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    rows = []
    for option in options():
        row = measure(option, batch=1)
        larger = measure(option, batch=LARGER_BATCH)
        row[f"batch_{LARGER_BATCH}"] = {
            key: larger[key]
            for key in ("saved_activation_bytes", "step_peak_bytes", "total_peak_bytes", "peak_phase")
        }
        row["saved_activation_bytes_per_image"] = activation_bytes_per_image(row, larger)
        rows.append(row)
        print(
            f"{label(option):45s} batch 1: {row['total_peak_bytes'] / GIB:6.2f} GiB (peak in {row['peak_phase']}); "
            f"batch {LARGER_BATCH}: {larger['total_peak_bytes'] / GIB:6.2f} GiB (peak in {larger['peak_phase']})"
        )
    result = {
        "what": "GPU memory of one SD 1.5 fine-tuning step at 512 px (64x64 latents), computed on the meta device",
        "method": __doc__.split("\n\n")[1].replace("\n", " "),
        "models": {
            "unet": SD15_UNET_CONFIG,
            "vae": SD15_VAE_CONFIG,
            "text_encoder": SD15_TEXT_ENCODER_CONFIG,
        },
        "lora": {"rank": 4, "alpha": 4, "target_modules": LORA_TARGETS},
        "not_counted": "CUDA context, allocator fragmentation, cuDNN/cuBLAS workspaces, EMA weights",
        "rows": rows,
        "wall_seconds": time.time() - started,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(markdown_table(rows))
    print(f"wrote {args.output}")
    return rows


if __name__ == "__main__":
    main()
