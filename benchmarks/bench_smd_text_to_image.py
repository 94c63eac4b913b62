"""Cost of SMD on a Stable Diffusion 1.5 UNet (CPU): engine train steps, forward passes and peak memory.

The model is the real SD 1.5 ``UNet2DConditionModel`` configuration (block_out_channels 320/640/1280/1280,
2 layers per block, cross-attention dim 768, 4 latent channels; 860M parameters), randomly initialised,
at a small latent size (16x16, i.e. 128 px) with CLIP-shaped text conditioning (77 x 768). The SMD model
wraps THE SAME UNet object (``SMDUNet2DConditionModel.from_unet``) with the package's training defaults
(``TrainingConfig().smd_config()``: latent_dim 32, 2 hypernetwork layers, identifier (80, 160)).

* Train step: :meth:`diffusers_smd.training.Trainer.step` (objective, backward, gradient clipping, AdamW,
  learning-rate step) of two engines on ``InMemoryTask(config, model, noise_scheduler, latents,
  conditioning={"encoder_hidden_states": ...})``: ``vanilla`` on the UNet, ``smd`` (the reference objective)
  on the SMD model, each without and with gradient checkpointing. The four configurations are timed in
  interleaved rounds (order alternating), medians compared. To fit a 23 GB machine the two engines share
  the UNet's weights and one AdamW state dictionary; each step does exactly the work of an independent
  engine's step. The forward (objective) and backward parts are timed too (wrappers around the engine's
  ``loss_fn`` and ``accelerator.backward``); the rest is clipping + AdamW + schedule.
* Forward: no-grad, eval forward of the SMD model (as a pipeline calls it: eta derived from (x_t, t)) vs the
  bare UNet, batch 2, interleaved.
* Peak memory: each configuration in a fresh process (glibc returns freed blocks at once:
  MALLOC_MMAP_THRESHOLD_); after a warm-up step (which creates the AdamW state) the peak-RSS mark is reset
  (/proc/self/clear_refs) and one more step runs. Reported: the peak RSS of that step and its growth over
  the RSS before it (gradients + activations + temporaries). Forward: growth during one no-grad forward.

    python benchmarks/bench_smd_text_to_image.py            # full run (about 20-30 min on 1 thread)
    python benchmarks/bench_smd_text_to_image.py --quick    # seconds-long smoke run (tiny UNet)

Writes benchmarks/results/smd_text_to_image.json (or --output) and prints the ratios and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
TARGET_TRAIN_RATIO = 1.25
TARGET_FORWARD_RATIO = 1.10
CHECKPOINTING = {"no_checkpointing": False, "gradient_checkpointing": True}
MODELS = ("vanilla", "smd")

#: runwayml/stable-diffusion-v1-5 unet/config.json (diffusers defaults spelled out where they matter).
SD15_UNET_CONFIG = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
#: SD 1.5's noise schedule (scheduler/scheduler_config.json).
SD15_NOISE_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}
SD15_TEXT = {"tokens": 77, "dim": 768}

QUICK_UNET_CONFIG = {
    **SD15_UNET_CONFIG,
    "sample_size": 8,
    "block_out_channels": (32, 64, 64, 64),
    "layers_per_block": 1,
    "cross_attention_dim": 32,
}
QUICK_TEXT = {"tokens": 8, "dim": 32}


def setting(quick: bool, latent_size: int | None = None, batch_size: int | None = None) -> dict:
    """What is measured: UNet config, latent size, batch, text shape and the SMD sizes (package defaults)."""
    from diffusers_smd.training import TrainingConfig

    return {
        "unet": QUICK_UNET_CONFIG if quick else SD15_UNET_CONFIG,
        "latent_size": latent_size or (8 if quick else 16),
        "batch_size": batch_size or 2,
        "text": QUICK_TEXT if quick else SD15_TEXT,
        "smd": TrainingConfig().smd_config(),
        "noise_schedule": SD15_NOISE_SCHEDULE,
    }


def build_models(cfg: dict, wrap: bool = True):
    """(unet, smd): the randomly initialised UNet and the SMD model wrapping that same object (None: no wrap)."""
    from diffusers import UNet2DConditionModel

    from diffusers_smd import SMDUNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**cfg["unet"])
    return unet, (SMDUNet2DConditionModel.from_unet(unet, **cfg["smd"]) if wrap else None)


def example_inputs(cfg: dict, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    size, channels = cfg["latent_size"], cfg["unet"]["in_channels"]
    latents = torch.randn(rows, channels, size, size, generator=generator)
    text = torch.randn(rows, cfg["text"]["tokens"], cfg["text"]["dim"], generator=generator)
    return latents, text


def build_trainer(objective: str, model, cfg: dict, latents, text, output_dir: str):
    """An engine for ``objective`` training ``model`` on the in-memory latents and text embeddings."""
    from diffusers import DDPMScheduler

    from diffusers_smd.training import InMemoryTask, Trainer, TrainingConfig

    config = TrainingConfig(
        objective=objective,
        smd_latent_dim=cfg["smd"]["latent_dim"],
        smd_hypernet_layers=cfg["smd"]["num_hypernet_layers"],
        train_batch_size=cfg["batch_size"],
        learning_rate=1e-6,
        lr_scheduler="constant",
        lr_warmup_steps=0,
        max_train_steps=10**6,
        checkpointing_steps=10**9,
        output_dir=os.path.join(output_dir, objective),
        seed=0,
    )
    task = InMemoryTask(
        config,
        model,
        DDPMScheduler(**cfg["noise_schedule"]),
        latents,
        conditioning={"encoder_hidden_states": text},
    )
    return Trainer(config, task)


# ---------------------------------------------------------------- arithmetic (pure, tested on stub timings)
def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in samples.items()}


def config_name(model: str, checkpointing: str) -> str:
    return model if checkpointing == "no_checkpointing" else f"{model}+gc"


def train_step_summary(
    step_seconds: dict[str, list[float]],
    part_seconds: dict[str, dict[str, list[float]]],
    target: float = TARGET_TRAIN_RATIO,
) -> dict:
    """Medians per configuration and the SMD / vanilla ratios, per checkpointing setting.

    ``step_seconds[config]`` lists whole-step times; ``part_seconds[config]`` has lists for ``forward`` and
    ``backward`` (same steps). ``forward_backward`` ratios compare the sums of the part medians.
    """
    step = medians(step_seconds)
    parts = {name: medians(values) for name, values in part_seconds.items()}
    ratios, compute_ratios = {}, {}
    for checkpointing in CHECKPOINTING:
        smd, vanilla = config_name("smd", checkpointing), config_name("vanilla", checkpointing)
        ratios[checkpointing] = step[smd] / step[vanilla]
        compute = {name: parts[name]["forward"] + parts[name]["backward"] for name in (smd, vanilla)}
        compute_ratios[checkpointing] = compute[smd] / compute[vanilla]
    return {
        "median_step_seconds": step,
        "median_part_seconds": parts,
        "ratio_smd_over_vanilla": ratios,
        "ratio_forward_backward_smd_over_vanilla": compute_ratios,
        "target_smd_over_vanilla": target,
        "meets_target": all(ratio <= target for ratio in ratios.values()),
    }


def forward_summary(seconds: dict[str, list[float]], target: float = TARGET_FORWARD_RATIO) -> dict:
    """Medians of the no-grad forwards, SMD / bare UNet, and each SMD part's share of the bare forward."""
    median = medians(seconds)
    ratio = median["smd"] / median["unet"]
    return {
        "median_seconds": median,
        "ratio_smd_over_unet": ratio,
        "share_of_unet_forward": {
            name: median[name] / median["unet"] for name in median if name not in ("unet", "smd")
        },
        "target_smd_over_unet": target,
        "meets_target": ratio <= target,
    }


def memory_summary(train: dict[str, dict], forward: dict[str, dict]) -> dict:
    """SMD / vanilla ratios of the measured peaks (bytes in, MiB out)."""
    mib = 2.0**20

    def in_mib(record: dict) -> dict:
        return {key: value / mib for key, value in record.items()}

    out = {
        "train_step_mib": {name: in_mib(record) for name, record in train.items()},
        "forward_mib": {name: in_mib(record) for name, record in forward.items()},
        "train_step_peak_ratio": {},
        "train_step_growth_ratio": {},
    }
    for checkpointing in CHECKPOINTING:
        smd, vanilla = train[config_name("smd", checkpointing)], train[config_name("vanilla", checkpointing)]
        out["train_step_peak_ratio"][checkpointing] = smd["peak"] / vanilla["peak"]
        out["train_step_growth_ratio"][checkpointing] = smd["growth"] / vanilla["growth"]
    if forward:
        out["forward_growth_ratio"] = forward["smd"]["growth"] / forward["unet"]["growth"]
    return out


def markdown_table(result: dict) -> str:
    """The docs table: seconds, MiB and ratios of the run in ``result``."""
    train, forward = result["train_step"], result["forward"]
    step, parts = train["median_step_seconds"], train["median_part_seconds"]
    lines = [
        "| measurement | vanilla | SMD | SMD / vanilla | target |",
        "|---|---:|---:|---:|---:|",
    ]
    for checkpointing, label in (("no_checkpointing", "no"), ("gradient_checkpointing", "yes")):
        smd, vanilla = config_name("smd", checkpointing), config_name("vanilla", checkpointing)
        lines.append(
            f"| train step (`Trainer.step`), gradient checkpointing {label} | {step[vanilla]:.2f} s | "
            f"{step[smd]:.2f} s | {train['ratio_smd_over_vanilla'][checkpointing]:.3f} | "
            f"<= {train['target_smd_over_vanilla']:.2f} |"
        )
        compute = {name: parts[name]["forward"] + parts[name]["backward"] for name in (smd, vanilla)}
        lines.append(
            f"| of which objective forward + backward, checkpointing {label} | {compute[vanilla]:.2f} s | "
            f"{compute[smd]:.2f} s | {train['ratio_forward_backward_smd_over_vanilla'][checkpointing]:.3f} | |"
        )
    fwd = forward["median_seconds"]
    lines.append(
        f"| forward, no grad (pipeline call) | {fwd['unet'] * 1e3:.0f} ms | {fwd['smd'] * 1e3:.0f} ms | "
        f"{forward['ratio_smd_over_unet']:.3f} | <= {forward['target_smd_over_unet']:.2f} |"
    )
    memory = result.get("peak_memory")
    if memory and memory.get("train_step_mib"):
        for checkpointing, label in (("no_checkpointing", "no"), ("gradient_checkpointing", "yes")):
            smd, vanilla = config_name("smd", checkpointing), config_name("vanilla", checkpointing)
            mib = memory["train_step_mib"]
            lines.append(
                f"| peak RSS of a train step, checkpointing {label} | {mib[vanilla]['peak']:.0f} MiB | "
                f"{mib[smd]['peak']:.0f} MiB | {memory['train_step_peak_ratio'][checkpointing]:.3f} | |"
            )
            lines.append(
                f"| its growth over weights + AdamW state, checkpointing {label} | "
                f"{mib[vanilla]['growth']:.0f} MiB | {mib[smd]['growth']:.0f} MiB | "
                f"{memory['train_step_growth_ratio'][checkpointing]:.3f} | |"
            )
        if "forward_growth_ratio" in memory:
            mib = memory["forward_mib"]
            lines.append(
                f"| forward activation memory (no grad) | {mib['unet']['growth']:.0f} MiB | "
                f"{mib['smd']['growth']:.0f} MiB | {memory['forward_growth_ratio']:.3f} | |"
            )
    params = result["parameters"]
    lines.append(
        f"| parameters | {params['unet'] / 1e6:.1f} M | {params['smd'] / 1e6:.1f} M | "
        f"{params['overhead_ratio']:.4f} | |"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------- measurements
def set_checkpointing(model, enabled: bool) -> None:
    if enabled:
        model.enable_gradient_checkpointing()
    else:
        model.disable_gradient_checkpointing()


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


class Stopwatch:
    """Both clocks at once: process CPU time (user + system; the primary figure on a shared machine, since
    other processes' load inflates wall time unevenly) and wall time."""

    def __enter__(self):
        self.started = {name: clock() for name, clock in CLOCKS.items()}
        return self

    def __exit__(self, *exc):
        self.seconds = {name: clock() - self.started[name] for name, clock in CLOCKS.items()}


def instrument(trainer) -> dict[str, dict[str, float]]:
    """Accumulate the seconds (per clock) spent in the engine's objective call and backward (wrappers; same work)."""
    spent = {part: dict.fromkeys(CLOCKS, 0.0) for part in ("forward", "backward")}
    loss_fn, backward = trainer.loss_fn, trainer.accelerator.backward

    def timed(part, call):
        def run(*args, **kwargs):
            watch = Stopwatch()
            with watch:
                result = call(*args, **kwargs)
            for clock, seconds in watch.seconds.items():
                spent[part][clock] += seconds
            return result

        return run

    trainer.loss_fn = timed("forward", loss_fn)
    trainer.accelerator.backward = timed("backward", backward)
    return spent


def time_train_steps(cfg: dict, rounds: int, warmup: int, log=print) -> tuple[dict, dict, dict]:
    """Interleaved engine steps of the four configurations.

    Returns ``(steps, parts, parameters)`` with ``steps[clock][config]`` a list of seconds and
    ``parts[clock][config][part]`` likewise, for the clocks "cpu" and "wall".
    """
    unet, smd = build_models(cfg)
    latents, text = example_inputs(cfg, rows=cfg["batch_size"])
    batch = {"input": latents, "encoder_hidden_states": text}
    steps = {clock: {} for clock in CLOCKS}
    parts = {clock: {} for clock in CLOCKS}
    with tempfile.TemporaryDirectory(prefix="bench-t2i-") as output_dir:
        trainers = {
            "vanilla": build_trainer("vanilla", unet, cfg, latents, text, output_dir),
            "smd": build_trainer("smd", smd, cfg, latents, text, output_dir),
        }
        # One AdamW state for the shared UNet weights (memory); each optimiser still updates all its parameters.
        trainers["smd"].optimizer.optimizer.state = trainers["vanilla"].optimizer.optimizer.state
        spent = {name: instrument(trainer) for name, trainer in trainers.items()}
        for round_index in range(warmup + rounds):
            order = MODELS if round_index % 2 == 0 else MODELS[::-1]
            for checkpointing, enabled in CHECKPOINTING.items():
                set_checkpointing(smd, enabled)  # reaches the shared UNet and the identifier
                for model in order:
                    name = config_name(model, checkpointing)
                    for part in spent[model].values():
                        part.update(dict.fromkeys(CLOCKS, 0.0))
                    watch = Stopwatch()
                    with watch:
                        trainers[model].step(batch)
                    if round_index >= warmup:
                        for clock in CLOCKS:
                            steps[clock].setdefault(name, []).append(watch.seconds[clock])
                            for part, seconds in spent[model].items():
                                parts[clock].setdefault(name, {}).setdefault(part, []).append(seconds[clock])
                    log(
                        f"  round {round_index} {name:12s} step {watch.seconds['cpu']:7.2f} s CPU, "
                        f"{watch.seconds['wall']:7.2f} s wall"
                    )
        set_checkpointing(smd, False)
        parameters = {
            "unet": sum(p.numel() for p in unet.parameters()),
            "smd": sum(p.numel() for p in smd.parameters()),
            "identifier": sum(p.numel() for p in smd.identifier.parameters()),
            "hypernetworks": sum(
                p.numel() for p in (*smd.hypernet_in.parameters(), *smd.hypernet_out.parameters())
            ),
            "identifier_block_out_channels": list(smd.config.identifier_block_out_channels),
        }
        parameters["overhead_ratio"] = parameters["smd"] / parameters["unet"]
    return steps, parts, parameters


@torch.no_grad()
def time_forwards(cfg: dict, repeats: int, warmup: int) -> dict[str, dict[str, list[float]]]:
    """Interleaved no-grad forwards: bare UNet, SMD model (eta derived, as in a pipeline), and SMD's parts.

    Returns ``seconds[clock][call]``.
    """
    from diffusers_smd.models import derived_mixture_noise

    unet, smd = build_models(cfg)
    unet.eval(), smd.eval()
    latents, text = example_inputs(cfg, rows=cfg["batch_size"])
    timestep = torch.tensor(500)
    eta = derived_mixture_noise(latents, timestep)
    latent = smd.identifier(latents, timestep, eta)
    first = smd.unet.conv_in(latents)
    last = torch.randn(latents.shape[0], smd.hypernet_out.channels, *latents.shape[2:])
    calls = {
        "unet": lambda: unet(latents, timestep, text),
        "smd": lambda: smd(latents, timestep, text),
        "derive_eta": lambda: derived_mixture_noise(latents, timestep),
        "identifier": lambda: smd.identifier(latents, timestep, eta),
        "hypernetworks": lambda: (smd.hypernet_in(first, latent), smd.hypernet_out(last, latent)),
    }
    seconds = {clock: {name: [] for name in calls} for clock in CLOCKS}
    for index in range(warmup + repeats):
        for name, call in calls.items():
            watch = Stopwatch()
            with watch:
                call()
            if index >= warmup:
                for clock in CLOCKS:
                    seconds[clock][name].append(watch.seconds[clock])
    return seconds


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    with open("/proc/self/status") as handle:
        return int(re.search(r"VmHWM:\s+(\d+) kB", handle.read()).group(1)) * 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def memory_child(kind: str, model_name: str, checkpointing: bool, cfg: dict) -> dict:
    """In a fresh process: peak RSS and its growth over the RSS before one train step (or forward)."""
    unet, smd = build_models(cfg, wrap=model_name == "smd")
    model = smd if model_name == "smd" else unet
    latents, text = example_inputs(cfg, rows=cfg["batch_size"])
    if kind == "forward":
        model.eval()
        with torch.no_grad():
            model(latents, 500, text)  # warm-up
            before = _rss_bytes()
            _reset_peak()
            model(latents, 500, text)
        return {"peak": _peak_bytes(), "growth": _peak_bytes() - before}
    set_checkpointing(model, checkpointing)
    with tempfile.TemporaryDirectory(prefix="bench-t2i-memory-") as output_dir:
        trainer = build_trainer(model_name, model, cfg, latents, text, output_dir)
        batch = {"input": latents, "encoder_hidden_states": text}
        trainer.step(batch)  # creates the AdamW state
        before = _rss_bytes()
        _reset_peak()
        trainer.step(batch)
        return {"peak": _peak_bytes(), "growth": _peak_bytes() - before}


def measure_memory(args, log=print) -> tuple[dict, dict]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(args.threads)}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(pathlib.Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")])
    )

    def run(kind: str, model: str, checkpointing: bool) -> dict:
        command = [sys.executable, __file__, "--memory-child", kind, model, str(int(checkpointing))]
        command += ["--threads", str(args.threads), "--latent_size", str(args.latent_size)]
        command += ["--batch_size", str(args.batch_size)] + (["--quick"] if args.quick else [])
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"memory child {kind} {model} failed:\n{done.stderr[-3000:]}")
        record = json.loads(done.stdout.strip().splitlines()[-1])
        log(
            f"  memory {kind:8s} {model:8s} checkpointing={checkpointing!s:5s} peak {record['peak'] / 2**20:8.0f} MiB"
            f"  growth {record['growth'] / 2**20:8.0f} MiB"
        )
        return record

    train = {
        config_name(model, checkpointing): run("train", model, enabled)
        for checkpointing, enabled in CHECKPOINTING.items()
        for model in MODELS
    }
    forward = {
        model: run("forward", "smd" if model == "smd" else "vanilla", False) for model in ("unet", "smd")
    }
    return train, forward


#: The setting fields that decide the memory figures: runs that agree on them may share them.
MEMORY_SETTING_KEYS = ("unet", "latent_size", "batch_size", "text_tokens", "text_dim", "smd", "threads")


def setting_record(cfg: dict, args) -> dict:
    """The ``setting`` section of the result JSON."""
    from diffusers_smd.models.identifier import default_identifier_channels

    identifier = list(default_identifier_channels(cfg["unet"]["block_out_channels"]))
    return {
        "unet": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg["unet"].items()},
        "latent_size": cfg["latent_size"],
        "batch_size": cfg["batch_size"],
        "text_tokens": cfg["text"]["tokens"],
        "text_dim": cfg["text"]["dim"],
        "smd": {**cfg["smd"], "identifier_block_out_channels": identifier},
        "objectives": {"vanilla": "vanilla", "smd": "smd (reference)"},
        "optimizer": "AdamW (engine default), one state shared by the two engines",
        "rounds": args.rounds,
        "forward_repeats": args.forward_repeats,
        "threads": args.threads,
    }


def reused_memory(path: pathlib.Path, setting: dict) -> dict:
    """The peak-memory section of an earlier result whose setting decides the same memory figures."""
    earlier = json.loads(path.read_text())
    recorded = earlier.get("setting", {})
    differing = [key for key in MEMORY_SETTING_KEYS if recorded.get(key) != setting[key]]
    if differing:
        raise SystemExit(f"--reuse_memory_from {path}: that run measured another {', '.join(differing)}")
    memory = earlier.get("peak_memory") or {}
    if "train_step_mib" not in memory:
        raise SystemExit(f"--reuse_memory_from {path}: that run has no peak-memory section")
    return {**memory, "reused_from": {"file": path.name, "run_measured_at": earlier.get("measured_at")}}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def available_memory_bytes() -> int:
    with open("/proc/meminfo") as handle:
        return int(re.search(r"MemAvailable:\s+(\d+) kB", handle.read()).group(1)) * 1024


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="Tiny UNet, one round, no memory phase (smoke run)."
    )
    parser.add_argument("--latent_size", type=int, default=None, help="Latent height and width (default 16).")
    parser.add_argument("--batch_size", type=int, default=None, help="Batch size (default 2).")
    parser.add_argument(
        "--rounds", type=int, default=4, help="Timed rounds of the four train configurations."
    )
    parser.add_argument("--forward_repeats", type=int, default=8, help="Timed no-grad forwards per model.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1).")
    parser.add_argument("--skip_memory", action="store_true", help="Skip the fresh-process memory phase.")
    parser.add_argument(
        "--reuse_memory_from",
        type=pathlib.Path,
        default=None,
        help="Take the peak-memory section from an earlier result of the same setting instead of measuring.",
    )
    parser.add_argument(
        "--output", type=pathlib.Path, default=None, help="JSON path (default benchmarks/results/)."
    )
    parser.add_argument(
        "--memory-child", nargs=3, metavar=("KIND", "MODEL", "CHECKPOINTING"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    for name in ("rounds", "forward_repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    torch.set_num_threads(args.threads)
    cfg = setting(args.quick, args.latent_size, args.batch_size)
    args.latent_size, args.batch_size = cfg["latent_size"], cfg["batch_size"]
    if args.memory_child:
        kind, model, checkpointing = args.memory_child
        print(json.dumps(memory_child(kind, model, checkpointing == "1", cfg)))
        return {}
    if args.quick:
        args.rounds, args.forward_repeats = 1, 1
    if not args.quick:
        needed = 15 * 2**30  # weights, gradients, one AdamW state (12.8 GiB), activations and a margin
        if available_memory_bytes() < needed:
            raise SystemExit(
                f"needs about {needed / 2**30:.0f} GiB of free memory, {available_memory_bytes() / 2**30:.1f} GiB "
                "available; try again when the machine is quieter"
            )
    started = time.time()
    log = print
    memory = None
    if args.reuse_memory_from is not None:
        memory = reused_memory(args.reuse_memory_from, setting_record(cfg, args))
        log(f"peak memory: reused from {args.reuse_memory_from}")
    elif not (args.quick or args.skip_memory):
        log("peak memory (fresh process per configuration):")
        memory = memory_summary(*measure_memory(args, log))
        memory["method"] = (
            "fresh process per configuration, MALLOC_MMAP_THRESHOLD_=65536; VmHWM reset after a warm-up step; "
            "peak = VmHWM during the measured step (or forward), growth = peak - RSS before it"
        )
        memory["measured_at"] = now()
    log("train steps (interleaved):")
    steps, parts, parameters = time_train_steps(cfg, rounds=args.rounds, warmup=1, log=log)
    log("forwards (interleaved):")
    forwards = time_forwards(cfg, repeats=args.forward_repeats, warmup=1)
    result = {
        "benchmark": "SMD vs vanilla on the SD 1.5 UNet (CPU): engine train steps, no-grad forwards, peak memory",
        "quick": args.quick,
        "setting": setting_record(cfg, args),
        "parameters": parameters,
        "clock": "process CPU time (user + system) of the one-thread benchmark process; 'wall_clock' repeats "
        "every figure in wall time, which other processes' load on a shared machine inflates unevenly",
        "train_step": {
            **train_step_summary(steps["cpu"], parts["cpu"]),
            "wall_clock": train_step_summary(steps["wall"], parts["wall"]),
            "raw_step_seconds": steps,
        },
        "forward": {
            **forward_summary(forwards["cpu"]),
            "wall_clock": forward_summary(forwards["wall"]),
            "raw_seconds": forwards,
        },
        "peak_memory": memory or {"method": "not measured (--quick or --skip_memory)"},
        "measured_at": now(),
        "wall_seconds": time.time() - started,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
        },
    }
    output = args.output or RESULTS / (
        "smd_text_to_image_quick.json" if args.quick else "smd_text_to_image.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    train, wall = result["train_step"], result["train_step"]["wall_clock"]
    for checkpointing in CHECKPOINTING:
        log(
            f"train step smd / vanilla ({checkpointing}): {train['ratio_smd_over_vanilla'][checkpointing]:.3f} CPU, "
            f"{wall['ratio_smd_over_vanilla'][checkpointing]:.3f} wall (target <= {TARGET_TRAIN_RATIO}); "
            f"forward+backward part {train['ratio_forward_backward_smd_over_vanilla'][checkpointing]:.3f} CPU"
        )
    log(
        f"forward smd / unet: {result['forward']['ratio_smd_over_unet']:.3f} CPU, "
        f"{result['forward']['wall_clock']['ratio_smd_over_unet']:.3f} wall (target <= {TARGET_FORWARD_RATIO})"
    )
    if memory:
        for checkpointing in CHECKPOINTING:
            log(
                f"peak memory smd / vanilla ({checkpointing}): {memory['train_step_peak_ratio'][checkpointing]:.3f}"
                f" (growth {memory['train_step_growth_ratio'][checkpointing]:.3f})"
            )
        log(f"forward activation memory smd / unet: {memory['forward_growth_ratio']:.3f}")
    log(markdown_table(result))
    log(f"wrote {output} ({result['wall_seconds'] / 60:.1f} min)")
    return result


if __name__ == "__main__":
    main()
