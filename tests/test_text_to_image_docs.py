"""Every command and snippet of docs/text-to-image.md runs as written, on tiny local stand-ins for the Hub model
and data set (sizes and step counts scaled down, mixed precision off: this is a CPU). ``run_commands`` and
``run_snippets`` take any page text, e.g. a README section with the same kinds of commands."""

import json
import pathlib
import re
import shlex

import pytest

from diffusers_smd import cli
from diffusers_smd.training import TextToImageTask, run_script
from tests.pipeline_testing import (
    captioned_images,
    save_captioned_image_folder,
    save_tiny_text_to_image_pipeline,
)

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "text-to-image.md"
SD15, SDXL = "stable-diffusion-v1-5/stable-diffusion-v1-5", "stabilityai/stable-diffusion-xl-base-1.0"
NARUTO = "lambdalabs/naruto-blip-captions"
SCRIPT = "training/train_text_to_image_smd.py"
#: Tiny sizes instead of the page's: (flag, value on the page, value here); values are checked to be on the page.
SCALED_DOWN = {"--resolution": "8", "--max_train_steps": "2", "--mixed_precision": "no"}


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def scaled(argv: list[str], stand_ins: dict[str, str]) -> list[str]:
    argv = [stand_ins.get(a, a) for a in argv]
    for flag, value in SCALED_DOWN.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
    return [*argv, "--validation_num_inference_steps", "2", "--smd_latent_dim", "4"]


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    """The page's Hub names -> local folders, in a fresh working directory (outputs land there, as for a user)."""
    import datasets

    monkeypatch.chdir(tmp_path)
    images, captions = captioned_images()
    naruto = tmp_path / "naruto"
    naruto.mkdir()
    table = datasets.Dataset.from_dict({"image": images, "text": list(captions)}).cast_column(
        "image", datasets.Image()
    )
    table.to_parquet(str(naruto / "train.parquet"))
    save_captioned_image_folder(tmp_path / "my_captioned_images")
    return {
        SD15: str(save_tiny_text_to_image_pipeline(tmp_path / "sd15")),
        SDXL: str(save_tiny_text_to_image_pipeline(tmp_path / "sdxl", sdxl=True)),
        NARUTO: str(naruto),
    }


def run_commands(text: str, stand_ins: dict[str, str]) -> list[str]:
    """Run every ```bash command of ``text`` (a training command of this page's kinds), scaled down; return them.

    ``accelerate launch training/train_text_to_image_smd.py ARGS`` runs what accelerate starts in its process,
    the script's main (``run_script(TextToImageTask, ARGS)``); ``diffusers-smd train-text-to-image ARGS`` is
    checked and its launch command built (``--dry_run``), then the launched module's main runs.
    """
    commands = [" ".join(block.replace("\\\n", " ").split()) for block in blocks(text, "bash")]
    for command in commands:
        argv = shlex.split(command)
        for flag in SCALED_DOWN:
            assert flag not in argv or argv[argv.index(flag) + 1] != SCALED_DOWN[flag]
        if argv[:3] == ["accelerate", "launch", SCRIPT]:
            assert run_script(TextToImageTask, scaled(argv[3:], stand_ins)) == 0, command
        else:
            assert argv[:2] == ["diffusers-smd", "train-text-to-image"], command
            flags = scaled(argv[2:], stand_ins)
            assert cli.main(["train-text-to-image", "--dry_run", *flags]) == 0, command
            assert run_script(TextToImageTask, flags) == 0, command
    return commands


def run_snippets(text: str, stand_ins: dict[str, str]) -> dict:
    """Run the ```python blocks of ``text`` in order, in one namespace, with the stand-ins; return the namespace."""
    from tests.pipeline_testing import captioned_dataset

    namespace: dict = {}
    for snippet in blocks(text, "python"):
        for name, folder in stand_ins.items():
            snippet = snippet.replace(f'"{name}"', repr(folder))
        snippet = snippet.replace("max_train_steps=1000", "max_train_steps=2")
        if "train_dataset=my_dataset" in snippet:
            namespace["my_dataset"] = captioned_dataset()
        exec(snippet, namespace)  # noqa: S102 - the page's own code
        namespace["snippets_run"] = namespace.get("snippets_run", 0) + 1
    return namespace


def test_every_command_and_snippet_of_the_page_runs(stand_ins, tmp_path):
    text = DOC.read_text(encoding="utf-8")
    assert len(run_commands(text, stand_ins)) == 4
    full = json.loads((tmp_path / "sd-naruto-smd" / "model_index.json").read_text())
    assert full["unet"] == ["diffusers_smd", "SMDUNet2DConditionModel"]
    assert full["scheduler"] == ["diffusers_smd", "ETSDMDPMSolverMultistepScheduler"]
    for lora, smd in [("sd-naruto-etsdm-lora", False), ("sd-naruto-smd-lora", True), ("sdxl-smd-lora", True)]:
        assert (tmp_path / lora / "pytorch_lora_weights.safetensors").is_file()
        assert (tmp_path / lora / "smd_modules").is_dir() is smd

    namespace = run_snippets(text, stand_ins)
    assert namespace["snippets_run"] == 5 and namespace["summary"].global_step == 2
    assert (tmp_path / "sd-smd-lora" / "smd_modules").is_dir() and (tmp_path / "ninja-cat.png").is_file()
    assert type(namespace["pipe"].unet).__name__ == "SMDUNet2DConditionModel"
    assert type(namespace["pipe"].scheduler).__name__ == "ETSDMDPMSolverMultistepScheduler"


def test_the_readme_section_runs(stand_ins, tmp_path):
    """README.md's "Text-to-image fine-tuning" section: both commands and the loading snippet, scaled down."""
    from tests.readme_text import readme_section

    text = readme_section("Text-to-image fine-tuning")
    assert len(run_commands(text, stand_ins)) == 2
    namespace = run_snippets(text, stand_ins)
    assert namespace["snippets_run"] == 1
    assert type(namespace["pipe"].unet).__name__ == "SMDUNet2DConditionModel"
    assert type(namespace["lora"].unet).__name__ == "SMDUNet2DConditionModel"
    assert namespace["image"].size[0] > 0
