"""The Hub model card: metadata the Hub parses, real numbers from the run, no placeholders."""

import json
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from diffusers_smd import SMDPipeline
from diffusers_smd.model_card import read_run_facts, render_model_card
from tests.hub_http import make_run_folder

REPO_ROOT = Path(__file__).resolve().parents[1]

# Leftovers of an unfilled template: Jinja tags, str.format fields, Python None, to-do markers.
PLACEHOLDER = re.compile(
    r"\{\{|\}\}|\{%|%\}|\{#|\{[A-Za-z_][A-Za-z0-9_]*\}|\bNone\b|\bnull\b|\bnan\b|TODO|FIXME"
)


def test_metadata_parses_and_describes_the_run(tmp_path):
    folder = make_run_folder(tmp_path / "run")
    saved = tmp_path / "README.md"
    render_model_card(folder, "me/smd-digits").save(saved)
    card = ModelCard.load(saved)  # huggingface_hub's own parser of README.md front matter
    data = card.data.to_dict()
    assert data["library_name"] == "diffusers"
    assert data["pipeline_tag"] == "unconditional-image-generation"
    assert data["license"] == "apache-2.0"
    assert {"diffusers", "diffusers-smd", "smd", "e-tsdm", "unconditional-image-generation"} <= set(
        data["tags"]
    )
    # The built-in digits are not a Hub data set and nothing was fine-tuned: no such metadata.
    assert "datasets" not in data and "base_model" not in data

    text = card.text
    # Counted from the safetensors headers; checked against the loaded model.
    unet = SMDPipeline.from_pretrained(folder).unet
    total, backbone = (
        sum(p.numel() for p in unet.parameters()),
        sum(p.numel() for p in unet.unet.parameters()),
    )
    assert (
        f"| Denoiser parameters | {total:,} ({backbone:,} in the UNet backbone, {total - backbone:,} in the SMD modules) |"
        in text
    )
    assert "| SMD mixture modules | latent dimension 8, 2 hypernetwork layers |" in text
    assert "| Training steps | 1,234 |" in text
    assert "threshold 10, 5 shared-condition intervals" in text
    assert "| Final training loss | 0.04231 |" in text
    assert "| Training time | 3 min 7 s |" in text  # 187.2 s
    assert "8, 16" in text and "8 x 8" in text
    # Evaluation table: one row per eval_results.json entry, values to 4 significant digits.
    assert "| `frechet_digits_distance` | `ETSDMDPMSolverMultistepScheduler` | 10 | 12.35 | 512 |" in text
    assert "| `frechet_digits_distance` | `DDIMScheduler` | 50 | 9.877 | 512 |" in text
    assert "![Samples drawn from this model](sample_grid.png)" in text
    # Both methods used are cited with their arXiv ids; the third method is named as not used.
    assert "2309.14068" in text and "2306.11251" in text and "2406.14040" in text
    assert text.count("```bibtex") == 2


def test_loading_snippets_name_the_repo_and_compile(tmp_path):
    folder = make_run_folder(tmp_path / "run")
    facts = read_run_facts(folder)
    text = render_model_card(folder, "someone/my-model").text
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the card shows no loading snippet"
    for code in blocks:
        compile(code, "<card snippet>", "exec")
        assert 'from_pretrained("someone/my-model"' in code
    if facts.is_smd_pipeline:  # every supported loading path has its snippet
        joined = "\n".join(blocks)
        assert "import diffusers_smd" in joined
        assert "trust_remote_code=True" in joined
        assert "SMDPipeline.from_pretrained" in joined and "torch_dtype=" in joined
        assert "ETSDMDPMSolverMultistepScheduler.from_config(pipe.scheduler.config)" in joined


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
        run_summary=False,
        eval_results=False,
        sample_grid=False,
    )
    card = render_model_card(folder, "me/plain")
    text = card.text
    assert "Not evaluated" in text and "| Metric |" not in text
    assert "sample_grid.png" not in text and "No sample grid" in text
    assert "Training steps" not in text and "Final training loss" not in text
    assert "| E-TSDM | not used |" in text
    assert "smd" not in card.data.tags and "e-tsdm" not in card.data.tags
    assert "```bibtex" not in text  # a vanilla model cites no method paper


@pytest.mark.parametrize("from_flags", [True, False])
def test_hub_dataset_and_base_model_become_metadata(tmp_path, from_flags):
    # Without the flag, the data set comes from run_summary.json's description.
    flags = {"dataset_name": "huggan/smithsonian_butterflies_subset" if from_flags else None}
    folder = make_run_folder(
        tmp_path / "run",
        training_args=flags,
        extra_run_summary={
            "dataset": "huggan/smithsonian_butterflies_subset (1000 images)",
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


def test_builtin_digits_are_described_with_their_size(tmp_path):
    text = render_model_card(make_run_folder(tmp_path / "run"), "me/smd-digits").text
    assert (
        "| Training data | scikit-learn's bundled 8x8 handwritten digits, 10 classes (1,437 training images) |"
        in text
    )


def test_local_paths_are_not_hub_metadata(tmp_path):
    local_model = tmp_path / "pretrained"
    local_model.mkdir()
    images = tmp_path / "images"
    images.mkdir()
    folder = make_run_folder(
        tmp_path / "run",
        training_args={
            "dataset_name": None,
            "train_data_dir": str(images),
            "pretrained_model_name_or_path": str(local_model),
        },
        extra_run_summary={"dataset": f"{images} (500 images)", "base_model": str(local_model)},
    )
    card = render_model_card(folder, "me/local")
    assert card.data.datasets is None and card.data.base_model is None
    assert "| Training data | a local image folder (500 training images) |" in card.text
    assert "| Base model | a local pretrained model |" in card.text


def test_token_like_flags_never_reach_the_card(tmp_path):
    folder = make_run_folder(tmp_path / "run", training_args={"hub_token": "hf_abcdefghijklmnopqrstuvwxyz"})
    text = str(render_model_card(folder, "me/smd-digits"))
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in text and "hub_token" not in text


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="model_index.json"):
        render_model_card(tmp_path, "me/x")
    folder = make_run_folder(tmp_path / "run")
    with pytest.raises(ValueError, match="license"):
        render_model_card(folder, "me/x", license="")


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
    rows = json.loads((folder / "eval_results.json").read_text())
    text = render_model_card(folder, "me/smd-digits").text
    table = [line for line in text.splitlines() if line.startswith("| `frechet")]
    assert len(table) == len(rows)
    for line, row in zip(table, rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1].strip("`") == row["scheduler"]
        assert int(cells[2]) == row["num_inference_steps"]
        assert float(cells[3]) == pytest.approx(row["value"], rel=1e-3)
        assert int(cells[4]) == row["num_samples"]


def test_a_stock_diffusers_pipeline_gets_a_plain_card(tmp_path):
    folder = make_run_folder(tmp_path / "run", objective="vanilla", etsdm=None, plain_diffusers=True)
    card = render_model_card(folder, "me/ddpm")
    blocks = re.findall(r"```python\n(.*?)```", card.text, flags=re.S)
    assert len(blocks) == 1 and "trust_remote_code" not in blocks[0] and "diffusers_smd" not in blocks[0]
    assert "| Pipeline | `DDPMPipeline` |" in card.text


def test_hyperparameters_shown_are_the_runs_own(tmp_path):
    smd = render_model_card(make_run_folder(tmp_path / "smd"), "me/smd").text
    assert "| `smd_latent_dim` | `8` |" in smd and "| `etsdm_intervals` | `5` |" in smd
    assert "`smd_mixture_samples`" not in smd.split("<details>")[0]  # only the smd-mixture objective uses it
    assert "`num_epochs`" not in smd.split("<details>")[0]  # --max_train_steps decides the length
    assert "(step 1,234, `ETSDMDDPMScheduler`, 50 denoising steps)" in smd
    vanilla = render_model_card(
        make_run_folder(tmp_path / "vanilla", objective="vanilla", etsdm=None), "me/v"
    ).text
    table = vanilla.split("<details>")[0]
    assert "`smd_" not in table and "`etsdm_" not in table
