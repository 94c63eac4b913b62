"""Text-to-image fine-tuning end to end: SD and SDXL layouts, each objective, with and without E-TSDM and LoRA,
on an image folder and on a datasets.Dataset; what is saved loads back (here and in a fresh process) and
generates; step 0 of an SMD fine-tune is the pretrained model."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from diffusers_smd.training import (
    TextToImageTask,
    TextToImageTrainingConfig,
    load_lora_fine_tune,
    parse_config,
    train,
)
from tests.pipeline_testing import (
    captioned_dataset,
    save_captioned_image_folder,
    save_tiny_text_to_image_pipeline,
    text_to_image_flags,
)

PIPELINES = {"sd": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}
#: The sampling scheduler a fine-tune saves: the pretrained one, or its E-TSDM variant (SD 1.5's PNDM has none:
#: E-TSDM DPM-Solver++).
SCHEDULERS = {
    ("sd", False): "PNDMScheduler",
    ("sd", True): "ETSDMDPMSolverMultistepScheduler",
    ("sdxl", False): "EulerDiscreteScheduler",
    ("sdxl", True): "ETSDMEulerDiscreteScheduler",
}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    return {
        layout: save_tiny_text_to_image_pipeline(root / layout, sdxl=layout == "sdxl") for layout in PIPELINES
    }


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return save_captioned_image_folder(tmp_path_factory.mktemp("captioned") / "images")


def fine_tune(pretrained_folder, output_dir, *extra, data=None, train_dataset=None):
    """Train in this process exactly as train_text_to_image_smd.py does; return the run summary as a dict."""
    flags = text_to_image_flags(pretrained_folder, output_dir, *extra)
    if data is not None:
        flags += ["--train_data_dir", str(data)]
    config = parse_config(TextToImageTrainingConfig, flags)
    return train(config, TextToImageTask(config, train_dataset=train_dataset)).to_dict()


def generate(pipe, seed=0, steps=2):
    """One image for a fixed prompt; the global RNG is seeded too (an SMD UNet in a stock pipeline may draw from it)."""
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    return pipe("a red cat", num_inference_steps=steps, generator=generator, output_type="np").images


_PRETRAINED_IMAGES: dict = {}


def pretrained_image(folder):
    """:func:`generate` of the pretrained pipeline in ``folder`` (computed once per folder)."""
    if folder not in _PRETRAINED_IMAGES:
        _PRETRAINED_IMAGES[folder] = generate(DiffusionPipeline.from_pretrained(folder))
    return _PRETRAINED_IMAGES[folder]


def safetensors_of(folder):
    (name,) = [n for n in os.listdir(folder) if n.endswith(".safetensors")]
    return load_file(os.path.join(folder, name))


def same_weights(folder_a, folder_b) -> bool:
    a, b = safetensors_of(folder_a), safetensors_of(folder_b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


CASES = [
    (layout, objective, etsdm, lora)
    for layout in PIPELINES
    for objective in ("vanilla", "smd", "smd-mixture")
    for etsdm in (False, True)
    for lora in (False, True)
]


@pytest.mark.parametrize(("layout", "objective", "etsdm", "lora"), CASES)
def test_fine_tune_saves_what_loads_back_and_generates(
    pretrained, image_folder, tmp_path, layout, objective, etsdm, lora
):
    # Both data sources for every layout and objective: an image folder with metadata.jsonl, a datasets.Dataset.
    from_folder = etsdm != lora
    out = tmp_path / "out"
    extra = ["--objective", objective, "--validation_prompts", "a cat", "a dog"]
    extra += ["--etsdm"] * etsdm + ["--lora"] * lora + ["--random_flip", "--proportion_empty_prompts", "0.3"]
    summary = fine_tune(
        pretrained[layout],
        out,
        *extra,
        data=image_folder if from_folder else None,
        train_dataset=None if from_folder else captioned_dataset(),
    )

    smd = objective != "vanilla"
    assert summary["task"] == "text-to-image" and summary["global_step"] == 2
    assert summary["model_class"] == ("SMDUNet2DConditionModel" if smd else "UNet2DConditionModel")
    assert summary["noise_scheduler"] == ("ETSDMDDPMScheduler" if etsdm else "DDPMScheduler")
    assert summary["etsdm"]["enabled"] is etsdm and summary["dataset_kind"] == (
        "folder" if from_folder else "memory"
    )
    counts = summary["parameter_counts"]
    assert (counts["trainable"] < counts["unet"]) is lora and (counts["smd_modules"] > 0) is smd
    assert (out / "sample_grid.png").is_file()  # the validation images, one per prompt

    scheduler_name = SCHEDULERS[layout, etsdm]
    if lora:
        saved = [
            "logs",
            "pytorch_lora_weights.safetensors",
            "run_summary.json",
            "sample_grid.png",
            "scheduler",
        ]
        assert sorted(os.listdir(out)) == sorted(saved + ["smd_modules"] * smd)
        lora_keys = load_file(out / "pytorch_lora_weights.safetensors")
        assert lora_keys and all(k.startswith("unet.") and ".lora." in k for k in lora_keys)
        pipe = load_lora_fine_tune(DiffusionPipeline.from_pretrained(pretrained[layout]), out)
    else:
        index = json.loads((out / "model_index.json").read_text())
        assert index["_class_name"] == PIPELINES[layout] and index["scheduler"][1] == scheduler_name
        assert not same_weights(out / "unet", pretrained[layout] / "unet")  # the UNet was trained ...
        for frozen in ["vae", "text_encoder"] + ["text_encoder_2"] * (layout == "sdxl"):
            assert same_weights(out / frozen, pretrained[layout] / frozen)  # ... the rest kept as it was
        pipe = DiffusionPipeline.from_pretrained(out)
    assert type(pipe).__name__ == PIPELINES[layout] and type(pipe.scheduler).__name__ == scheduler_name
    assert type(pipe.unet).__name__ == summary["model_class"]
    after = generate(pipe)
    assert after.shape == (1, 8, 8, 3) and np.isfinite(after).all()
    assert not np.array_equal(after, pretrained_image(pretrained[layout]))


@pytest.mark.parametrize("layout", PIPELINES)
@pytest.mark.parametrize("lora", [False, True])
def test_step_zero_of_an_smd_fine_tune_is_the_pretrained_model(
    pretrained, image_folder, tmp_path, layout, lora
):
    """Zero-initialised SMD output projections (and LoRA's zero B matrices): the same seed gives the same image."""
    out = tmp_path / "out"
    summary = fine_tune(
        pretrained[layout],
        out,
        "--objective",
        "smd",
        "--max_train_steps",
        "0",
        *["--lora"] * lora,
        data=image_folder,
    )
    assert summary["global_step"] == 0 and summary["model_class"] == "SMDUNet2DConditionModel"
    reference = generate(DiffusionPipeline.from_pretrained(pretrained[layout]), steps=3)
    if lora:
        converted = load_lora_fine_tune(DiffusionPipeline.from_pretrained(pretrained[layout]), out)
    else:
        converted = DiffusionPipeline.from_pretrained(out)
    assert type(converted.unet).__name__ == "SMDUNet2DConditionModel"
    np.testing.assert_array_equal(generate(converted, steps=3), reference)


LOAD_IN_A_FRESH_PROCESS = """
import json, sys, torch
torch.set_num_threads(1)
from diffusers import DiffusionPipeline

def generate(pipe):
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(0)
    return pipe("a red cat", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images

base, full, lora_smd, lora_stock = sys.argv[1:5]
images = {}
# 1. Without importing diffusers_smd: the folder's loader shims (trust_remote_code) import it.
assert "diffusers_smd" not in sys.modules
pipe = DiffusionPipeline.from_pretrained(full, trust_remote_code=True)
images["full_remote_code"] = generate(pipe).tolist()
classes = [type(pipe).__name__, type(pipe.unet).__name__, type(pipe.scheduler).__name__]
# 2. After `import diffusers_smd`.
import diffusers_smd
images["full"] = generate(DiffusionPipeline.from_pretrained(full)).tolist()
# 3. A LoRA + SMD fine-tune into the base pipeline.
from diffusers_smd.training import load_lora_fine_tune
pipe = load_lora_fine_tune(DiffusionPipeline.from_pretrained(base), lora_smd)
classes += [type(pipe.unet).__name__, type(pipe.scheduler).__name__]
images["lora_smd"] = generate(pipe).tolist()
# 4. An E-TSDM LoRA fine-tune the stock way: load_lora_weights and the saved E-TSDM scheduler.
pipe = DiffusionPipeline.from_pretrained(base)
pipe.load_lora_weights(lora_stock)
name = json.load(open(lora_stock + "/scheduler/scheduler_config.json"))["_class_name"]
pipe.scheduler = getattr(diffusers_smd, name).from_pretrained(lora_stock, subfolder="scheduler")
classes += [type(pipe.unet).__name__, type(pipe.scheduler).__name__]
images["lora_stock"] = generate(pipe).tolist()
print(json.dumps({"classes": classes, "images": images}))
"""


@pytest.mark.parametrize("layout", PIPELINES)
def test_saved_fine_tunes_load_and_generate_in_a_fresh_process(
    pretrained, image_folder, tmp_path, layout, subprocess_env
):
    base = pretrained[layout]
    outputs = {
        "full": ("--objective", "smd", "--etsdm"),
        "lora_smd": ("--objective", "smd", "--etsdm", "--lora"),
        "lora_stock": ("--objective", "vanilla", "--etsdm", "--lora"),
    }
    for name, extra in outputs.items():
        fine_tune(base, tmp_path / name, *extra, data=image_folder)
    result = subprocess.run(
        [sys.executable, "-c", LOAD_IN_A_FRESH_PROCESS, str(base), *(str(tmp_path / n) for n in outputs)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    scheduler = SCHEDULERS[layout, True]
    assert loaded["classes"][:3] == [PIPELINES[layout], "SMDUNet2DConditionModel", scheduler]
    assert loaded["classes"][3:] == ["SMDUNet2DConditionModel", scheduler, "UNet2DConditionModel", scheduler]

    # The same images as this process draws from what it trained (same seeds).
    full = DiffusionPipeline.from_pretrained(tmp_path / "full")
    np.testing.assert_array_equal(np.array(loaded["images"]["full"], dtype=np.float32), generate(full))
    np.testing.assert_array_equal(
        np.array(loaded["images"]["full_remote_code"], dtype=np.float32), generate(full)
    )
    lora = load_lora_fine_tune(DiffusionPipeline.from_pretrained(base), tmp_path / "lora_smd")
    np.testing.assert_array_equal(np.array(loaded["images"]["lora_smd"], dtype=np.float32), generate(lora))


def test_a_full_fine_tune_publishes_with_a_text_to_image_card(pretrained, image_folder, tmp_path):
    """A dry-run publish stages the folder with its shims and a card that describes a text-to-image run."""
    from diffusers_smd.hub import publish

    out = tmp_path / "out"
    fine_tune(pretrained["sd"], out, "--objective", "smd", "--etsdm", "--validation_prompts", "a cat", "a dog",
              data=image_folder)  # fmt: skip
    result = publish(out, "me/sd-smd", dry_run_dir=tmp_path / "staged")
    assert {"unet/diffusers_smd.py", "scheduler/diffusers_smd.py", "README.md", "sample_grid.png"} <= set(
        result.files
    )
    assert not any(name.startswith("checkpoint-") for name in result.files)
    card = (tmp_path / "staged" / "README.md").read_text()
    assert "pipeline_tag: text-to-image" in card and "A text-to-image diffusion model" in card
    assert (
        "Validation images drawn at the end of training (step 2, `ETSDMDPMSolverMultistepScheduler`, 2 denoising "
        'steps), one per prompt: "a cat"; "a dog"' in card
    )
    for code in re.findall(r"```python\n(.*?)```", card, flags=re.S):
        compile(code, "<card snippet>", "exec")
        assert 'pipe("a photo of an astronaut riding a horse"' in code


@pytest.mark.parametrize("lora", [False, True])
def test_prediction_type_override_reaches_the_training_target_and_the_saved_scheduler(
    pretrained, image_folder, tmp_path, lora
):
    """SD 2.x-style v-prediction: the objective's target and the scheduler the fine-tune is sampled with agree."""
    out = tmp_path / "out"
    extra = ["--prediction_type", "v_prediction", "--max_train_steps", "1", *["--lora"] * lora]
    summary = fine_tune(pretrained["sd"], out, *extra, data=image_folder)
    assert summary["prediction_type"] == "v_prediction"
    saved = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "PNDMScheduler" and saved["prediction_type"] == "v_prediction"
