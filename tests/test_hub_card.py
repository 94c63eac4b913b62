"""The Hub model card: metadata the Hub parses, facts from the run summary, no placeholders."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from diffusers_smd import SMDPipeline
from diffusers_smd.losses import OBJECTIVES, VanillaObjective
from diffusers_smd.model_card import HEADLINE_SETTINGS, render_model_card
from diffusers_smd.training import RunSummary, TrainingConfig
from tests.hub_http import make_run_folder

REPO_ROOT = Path(__file__).resolve().parents[1]

# Leftovers of an unfilled template: Jinja tags, str.format fields, Python None, to-do markers.
PLACEHOLDER = re.compile(
    r"\{\{|\}\}|\{%|%\}|\{#|\{[A-Za-z_][A-Za-z0-9_]*\}|\bNone\b|\bnull\b|\bnan\b|\bFalse\b|TODO|FIXME"
)


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_metadata_parses_and_describes_the_run(tmp_path):
    folder = make_run_folder(tmp_path / "run")
    saved = tmp_path / "README.md"
    render_model_card(folder, "me/smd-digits").save(saved)
    card = ModelCard.load(saved)  # huggingface_hub's own parser of README.md front matter
    data = card.data.to_dict()
    assert data["library_name"] == "diffusers"
    assert data["pipeline_tag"] == "unconditional-image-generation"  # the run summary's task
    assert data["license"] == "apache-2.0"
    assert {"diffusers", "diffusers-smd", "smd", "e-tsdm", "unconditional-image-generation"} <= set(
        data["tags"]
    )
    # The built-in digits are not a Hub data set and nothing was fine-tuned: no such metadata.
    assert "datasets" not in data and "base_model" not in data

    text = card.text
    # Counted in the loaded model, independently of the summary the fixture wrote.
    unet = SMDPipeline.from_pretrained(folder).unet
    total, backbone = (
        sum(p.numel() for p in unet.parameters()),
        sum(p.numel() for p in unet.unet.parameters()),
    )
    assert (
        f"| Denoiser parameters | {total:,} ({backbone:,} in the UNet backbone, {total - backbone:,} in the SMD modules) |"
        in text
    )
    assert "Trained parameters" not in text  # every parameter was trained
    assert "| Components | scheduler: `ETSDMDDPMScheduler`, unet: `SMDUNet2DModel` |" in text
    assert "| Training steps | 1,234 |" in text
    assert "| E-TSDM | threshold 10, 5 shared-condition intervals |" in text
    assert "| Noise scheduler | `ETSDMDDPMScheduler`, 100 training timesteps, predicts `epsilon` |" in text
    assert "| Final training loss | 0.04231 |" in text
    assert "| Training time | 3 min 7 s |" in text  # 187.2 s
    assert "| Resolution | 8 x 8, 1 channel |" in text
    assert "| Total batch size | 16 (1 process) |" in text
    # Evaluation table: one row per numeric eval_results.json entry, values to 4 significant digits.
    assert "| `frechet_digits_distance` | `ETSDMDPMSolverMultistepScheduler` | 10 | 12.35 | 512 |" in text
    assert "| `frechet_digits_distance` | `DDIMScheduler` | 50 | 9.877 | 512 |" in text
    assert "class_histogram" not in text
    assert "![Samples drawn from this model](sample_grid.png)" in text
    # Both methods used are cited with their arXiv ids; the third method is named as not used.
    assert "2309.14068" in text and "2306.11251" in text and "2406.14040" in text
    assert text.count("```bibtex") == 2


def test_every_loading_snippet_runs(tmp_path, monkeypatch):
    """Each snippet names the repo, and runs: executed with the repo id pointing at the local folder."""
    folder = make_run_folder(tmp_path / "run")
    blocks = python_blocks(render_model_card(folder, "someone/my-model").text)
    joined = "\n".join(blocks)
    assert "import diffusers_smd" in joined and "trust_remote_code=True" in joined
    assert "SMDPipeline.from_pretrained" in joined and "torch_dtype=" in joined
    assert "ETSDMDPMSolverMultistepScheduler.from_config(pipe.scheduler.config)" in joined
    assert len(blocks) == 3  # one per loading path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for code in blocks:
        assert 'from_pretrained("someone/my-model"' in code
        namespace = {}
        exec(code.replace("someone/my-model", str(folder)), namespace)  # noqa: S102
        images = namespace["images"]
        assert len(images) == 4 and images[0].size == (8, 8)


@pytest.mark.parametrize("minimal", [False, True])
def test_no_placeholder_is_left(tmp_path, minimal):
    kwargs = (
        {"run_summary": False, "eval_results": False, "sample_grid": False, "etsdm": None} if minimal else {}
    )
    folder = make_run_folder(tmp_path / "run", **kwargs)
    text = str(render_model_card(folder, "me/smd-digits"))
    leftovers = PLACEHOLDER.findall(text)
    assert not leftovers, leftovers


def test_missing_optional_data_is_said_not_invented(tmp_path):
    folder = make_run_folder(
        tmp_path / "run",
        objective="vanilla",
        etsdm=None,
        eval_results=False,
        sample_grid=False,
        summary={"final_loss": None},
    )
    card = render_model_card(folder, "me/plain")
    text = card.text
    assert "Not evaluated" in text and "| Metric |" not in text
    assert "sample_grid.png" not in text and "No sample grid" in text
    assert "Final training loss" not in text and "Denoiser parameters" in text
    assert "| E-TSDM | not used |" in text
    assert "smd" not in card.data.tags and "e-tsdm" not in card.data.tags
    assert "```bibtex" not in text and "uses neither SMD nor E-TSDM" in text


def test_a_folder_without_run_summary_claims_no_training_facts(tmp_path):
    folder = make_run_folder(tmp_path / "run", run_summary=False)
    card = render_model_card(folder, "me/saved")
    assert card.data.pipeline_tag is None  # the task is not recorded: no tag is guessed
    assert "does not record how it was trained" in card.text
    for row in ("Training steps", "Training objective", "E-TSDM", "Training data"):
        assert f"| {row} |" not in card.text
    assert "```bibtex" not in card.text
    assert len(python_blocks(card.text)) == 3  # every loading path...
    assert "from_config" not in card.text  # ...but no scheduler advice without the E-TSDM facts


def test_hub_dataset_and_base_model_become_metadata(tmp_path):
    folder = make_run_folder(
        tmp_path / "run",
        summary={
            "dataset": "huggan/smithsonian_butterflies_subset",
            "dataset_kind": "hub",
            "dataset_size": 1000,
            "base_model": "google/ddpm-cifar10-32",
        },
    )
    card = render_model_card(folder, "me/butterflies")
    assert card.data.datasets == ["huggan/smithsonian_butterflies_subset"]
    assert card.data.base_model == "google/ddpm-cifar10-32"
    link = "[huggan/smithsonian_butterflies_subset](https://huggingface.co/datasets/huggan/smithsonian_butterflies_subset)"
    assert f"| Training data | {link} (1,000 training images) |" in card.text
    assert (
        "| Base model | [google/ddpm-cifar10-32](https://huggingface.co/google/ddpm-cifar10-32) |"
        in card.text
    )
    assert "Fine-tuned from [google/ddpm-cifar10-32]" in card.text


def test_builtin_digits_are_described_with_their_size(tmp_path):
    text = render_model_card(make_run_folder(tmp_path / "run"), "me/smd-digits").text
    assert (
        "| Training data | the built-in `digits` data set of diffusers-smd (1,437 training images) |" in text
    )


def test_local_paths_are_not_hub_metadata(tmp_path):
    local_model = tmp_path / "pretrained"
    local_model.mkdir()
    images = tmp_path / "images"
    images.mkdir()
    folder = make_run_folder(
        tmp_path / "run",
        summary={
            "dataset": str(images),
            "dataset_kind": "folder",
            "dataset_size": 500,
            "base_model": str(local_model),
        },
    )
    card = render_model_card(folder, "me/local")
    assert card.data.datasets is None and card.data.base_model is None
    assert "| Training data | a local image folder (500 training images) |" in card.text
    assert "| Base model | a local pretrained model |" in card.text
    assert str(tmp_path) not in card.text.split("<details>")[0]  # local paths stay out of the visible card


def test_token_like_settings_never_reach_the_card(tmp_path):
    folder = make_run_folder(tmp_path / "run")
    summary = RunSummary.read(folder)
    summary.config["hub_token"] = "hf_abcdefghijklmnopqrstuvwxyz"  # a summary written by some other script
    summary.write(folder)
    text = str(render_model_card(folder, "me/smd-digits"))
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in text and "hub_token" not in text


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="model_index.json"):
        render_model_card(tmp_path, "me/x")
    folder = make_run_folder(tmp_path / "run")
    with pytest.raises(ValueError, match="license"):
        render_model_card(folder, "me/x", license="")


@pytest.mark.parametrize("name", ["run_summary.json", "eval_results.json", "model_index.json"])
@pytest.mark.parametrize("content", ["{not json", '"a string"'])
def test_a_corrupt_run_file_is_named(tmp_path, name, content):
    folder = make_run_folder(tmp_path / "run")
    (folder / name).write_text(content)
    with pytest.raises(ValueError, match=re.escape(str(folder / name))):
        render_model_card(folder, "me/x")


def test_a_summary_with_a_missing_field_is_named(tmp_path):
    folder = make_run_folder(tmp_path / "run")
    payload = json.loads((folder / "run_summary.json").read_text())
    del payload["dataset_size"]
    (folder / "run_summary.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"run_summary\.json.*dataset_size"):
        render_model_card(folder, "me/x")


def test_template_lives_in_one_place():
    """The package ships the template; the top-level model_cards/ only points to it (no drifting copy)."""
    template = REPO_ROOT / "diffusers_smd" / "assets" / "model_cards" / "smd_pipeline.md"
    assert template.is_file()
    pointer = (REPO_ROOT / "model_cards" / "README.md").read_text(encoding="utf-8")
    assert "diffusers_smd/assets/model_cards/smd_pipeline.md" in pointer
    assert sorted(p.name for p in (REPO_ROOT / "model_cards").iterdir()) == ["README.md"]
    # Shipped as package data by pyproject's [tool.setuptools.package-data] "assets/**/*".
    assert "assets/**/*" in (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")


def test_eval_table_matches_eval_results_file(tmp_path):
    folder = make_run_folder(tmp_path / "run")
    rows = [
        r for r in json.loads((folder / "eval_results.json").read_text()) if r["metric"].startswith("frechet")
    ]
    text = render_model_card(folder, "me/smd-digits").text
    table = [line for line in text.splitlines() if line.startswith("| `frechet")]
    assert len(table) == len(rows) == 2
    for line, row in zip(table, rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1].strip("`") == row["scheduler"]
        assert int(cells[2]) == row["num_inference_steps"]
        assert float(cells[3]) == pytest.approx(row["value"], rel=1e-3)
        assert int(cells[4]) == row["num_samples"]


def test_a_stock_diffusers_pipeline_gets_a_plain_card(tmp_path):
    folder = make_run_folder(
        tmp_path / "run", objective="vanilla", etsdm=None, plain_diffusers=True, run_summary=False
    )
    card = render_model_card(folder, "me/ddpm")
    blocks = python_blocks(card.text)
    assert len(blocks) == 1 and "trust_remote_code" not in blocks[0] and "diffusers_smd" not in blocks[0]
    assert "| Pipeline | `DDPMPipeline` |" in card.text


def test_hyperparameters_shown_are_the_runs_own(tmp_path):
    smd = render_model_card(make_run_folder(tmp_path / "smd"), "me/smd").text
    table = smd.split("<details>")[0]
    assert "| `smd_latent_dim` | `8` |" in table and "| `learning_rate` | `0.0001` |" in table
    assert "`num_epochs`" not in table  # --max_train_steps decides the length
    assert "(step 1,234, `ETSDMDDPMScheduler`, 50 denoising steps)" in smd
    # Every setting is in the collapsed block, as training recorded it.
    settings = json.loads(re.search(r"```json\n(.*?)```", smd, flags=re.S).group(1))
    assert settings == {k: v for k, v in RunSummary.read(tmp_path / "smd").config.items() if v is not None}
    vanilla = render_model_card(
        make_run_folder(tmp_path / "vanilla", objective="vanilla", etsdm=None), "me/v"
    ).text
    assert "`smd_" not in vanilla.split("<details>")[0]  # a vanilla run has no SMD modules


def test_headline_settings_are_training_settings():
    """A renamed training setting must not silently drop out of the card."""
    fields = {f.name for f in dataclasses.fields(TrainingConfig)}
    assert set(HEADLINE_SETTINGS) <= fields, set(HEADLINE_SETTINGS) - fields


def test_objective_text_and_citations_come_from_the_registry(tmp_path, monkeypatch):
    """The card names no objective itself: a new objective in the registry is described and cited from there."""

    class ToyMixtureObjective(VanillaObjective):
        name = "toy-mixture"
        needs_mixture_model = True
        description = "a toy objective registered by this test"

    monkeypatch.setitem(OBJECTIVES, "toy-mixture", ToyMixtureObjective)
    folder = make_run_folder(tmp_path / "run", etsdm=None, summary={"objective": "toy-mixture"})
    card = render_model_card(folder, "me/toy")
    assert "trained with a toy objective registered by this test" in card.text
    assert "smd" in card.data.tags and card.text.count("```bibtex") == 1 and "2309.14068" in card.text
    for name, objective in OBJECTIVES.items():
        if name != "toy-mixture":
            folder = make_run_folder(tmp_path / name, objective=name, etsdm=None, eval_results=False)
            text = render_model_card(folder, "me/x").text
            assert f"trained with {objective.description}" in text
            assert ("2309.14068" in text.split("Other methods")[0]) == objective.needs_mixture_model


def test_a_text_to_image_lora_run_is_described_as_one(tmp_path):
    """The card follows the summary's task and parameter counts, not an SMDPipeline-only picture."""
    folder = tmp_path / "sd"
    folder.mkdir()
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "unet": ["diffusers_smd", "SMDUNet2DConditionModel"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "safety_checker": [None, None],
    }
    (folder / "model_index.json").write_text(json.dumps(index))
    summary = RunSummary.read(make_run_folder(tmp_path / "run", etsdm=None))
    summary = dataclasses.replace(
        summary,
        task="text-to-image",
        model_class="SMDUNet2DConditionModel",
        noise_scheduler="DDPMScheduler",
        dataset="lambdalabs/naruto-blip-captions",
        dataset_kind="hub",
        base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
        parameter_counts={
            "total": 860_000_000,
            "unet": 859_000_000,
            "smd_modules": 1_000_000,
            "trainable": 1_600_000,
        },
    )
    summary.write(folder)
    card = render_model_card(folder, "me/naruto")
    assert card.data.pipeline_tag == "text-to-image" and "text-to-image" in card.data.tags
    assert "# naruto\n\nA text-to-image diffusion model (a diffusers `StableDiffusionPipeline`" in card.text
    assert "1,600,000 of its 860,000,000 parameters were trained" in card.text
    assert "| Trained parameters | 1,600,000 |" in card.text
    blocks = python_blocks(card.text)
    assert len(blocks) == 3
    for code in blocks:
        compile(code, "<card snippet>", "exec")
        assert 'pipe("a photo of an astronaut riding a horse", num_inference_steps=' in code
    assert "import diffusers_smd\nfrom diffusers import StableDiffusionPipeline" in blocks[2]
    assert "StableDiffusionPipeline.from_pretrained(" in blocks[2]
