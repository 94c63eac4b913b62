"""Hub model cards for diffusers-smd pipeline folders, written from the run's real files.

:func:`render_model_card` reads a saved pipeline folder and fills the Jinja2 template
``diffusers_smd/assets/model_cards/smd_pipeline.md`` (the one and only copy of the template; the
top-level ``model_cards/README.md`` points to it). Sources, in order of trust:

* the saved pipeline itself: ``model_index.json``, ``unet/config.json``,
  ``scheduler/scheduler_config.json`` (E-TSDM ``etsdm_threshold`` / ``etsdm_intervals``) and the
  parameter count read from the safetensors headers (no weights are loaded);
* ``training_args.json``: every flag of ``training/train_smd.py`` (``objective``, ``dataset_name``,
  ``train_data_dir``, ``resolution``, ``pretrained_model_name_or_path``, ``smd_*``, ...);
* ``run_summary.json``: ``global_step``, ``objective``, ``dataset``, ``resolution``, ``final_loss``,
  ``wall_clock_seconds`` (or ``train_seconds``), ``base_model``, ``etsdm`` and parameter counts;
* ``eval_results.json``: a list of ``{"metric", "scheduler", "num_inference_steps", "value",
  "num_samples"}`` rows written by ``diffusers-smd eval``;
* ``sample_grid.png``.

A missing optional file leaves its section out or says so ("Not evaluated"); nothing is invented.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from diffusers.utils.hub_utils import populate_model_card
from huggingface_hub import ModelCard, ModelCardData

__all__ = ["MODEL_CARD_TEMPLATE", "RunFacts", "read_run_facts", "render_model_card"]

MODEL_CARD_TEMPLATE = "smd_pipeline.md"
"""File name of the card template inside ``diffusers_smd/assets/model_cards/``."""

# The data sets that train_smd.py ships offline: not Hub ids, so never put in the `datasets` metadata.
_BUILTIN_DATASETS = {"digits": "scikit-learn's bundled 8x8 handwritten digits, 10 classes"}
# run_summary.json's "dataset" is a description such as "built-in digits (train split, 1437 images)",
# "huggan/flowers (8189 images)" or "/data/faces (500 images)".
_DATASET_SIZE = re.compile(r"\((?:[^()]*, )?([\d,]+) images\)\s*$")

# Flags worth a row of their own in the card (the full set is in a collapsed block).
_HEADLINE_FLAGS = (
    "objective",
    "learning_rate",
    "train_batch_size",
    "gradient_accumulation_steps",
    "max_train_steps",
    "num_epochs",
    "lr_scheduler",
    "lr_warmup_steps",
    "use_ema",
    "mixed_precision",
    "prediction_type",
    "snr_gamma",
    "smd_latent_dim",
    "smd_hypernet_layers",
    "smd_mixture_samples",
    "etsdm_threshold",
    "etsdm_intervals",
    "seed",
)


@dataclass(frozen=True)
class _Paper:
    key: str
    reference: str
    bibtex: str


_SMD_PAPER = _Paper(
    key="smd",
    reference=(
        "Soft Mixture Denoising (SMD): Yangming Li, Boris van Breugel, Mihaela van der Schaar, "
        '"Soft Mixture Denoising: Beyond the Expressive Bottleneck of Diffusion Models", ICLR 2024, '
        "[arXiv:2309.14068](https://arxiv.org/abs/2309.14068)"
    ),
    bibtex="""@inproceedings{li2024soft,
  title     = {Soft Mixture Denoising: Beyond the Expressive Bottleneck of Diffusion Models},
  author    = {Li, Yangming and van Breugel, Boris and van der Schaar, Mihaela},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2024},
  note      = {arXiv:2309.14068}
}""",
)
_ETSDM_PAPER = _Paper(
    key="e-tsdm",
    reference=(
        "Early timestep-shared diffusion (E-TSDM): Zhantao Yang, Ruili Feng, Han Zhang, Yujun Shen et al., "
        '"Lipschitz Singularities in Diffusion Models", ICLR 2024, '
        "[arXiv:2306.11251](https://arxiv.org/abs/2306.11251)"
    ),
    bibtex="""@inproceedings{yang2024lipschitz,
  title     = {Lipschitz Singularities in Diffusion Models},
  author    = {Yang, Zhantao and Feng, Ruili and Zhang, Han and Shen, Yujun and others},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2024},
  note      = {arXiv:2306.11251}
}""",
)
_DILATION_PAPER = _Paper(
    key="dilation-path",
    reference=(
        "Dilation-path sampler: Omar Chehab, Anna Korba, "
        '"A Practical Diffusion Path for Sampling", ICML 2024 workshop, '
        "[arXiv:2406.14040](https://arxiv.org/abs/2406.14040)"
    ),
    bibtex="""@article{chehab2024practical,
  title   = {A Practical Diffusion Path for Sampling},
  author  = {Chehab, Omar and Korba, Anna},
  journal = {arXiv preprint arXiv:2406.14040},
  year    = {2024}
}""",
)


@dataclass
class RunFacts:
    """What is known about a saved pipeline folder; ``None`` means "not recorded in the folder"."""

    pipeline_class: str
    is_smd_pipeline: bool
    unet_class: str | None = None
    unet_config: dict[str, Any] = field(default_factory=dict)
    unet_parameters: int | None = None
    smd_config: dict[str, Any] = field(default_factory=dict)  # the SMD wrapper's own config keys, if any
    smd_parameters: int | None = None  # parameters of the SMD modules (identifier + hypernetwork)
    scheduler_class: str | None = None
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    etsdm_threshold: int | None = None
    etsdm_intervals: int | None = None
    objective: str | None = None
    global_step: int | None = None
    dataset_kind: str | None = None  # "builtin" (the bundled digits), "hub" (a Hub data set id) or "local"
    dataset: str | None = None  # the Hub data set id (kind "hub") or the built-in name
    dataset_size: int | None = None  # number of training images, when training recorded it
    resolution: int | None = None
    final_loss: float | None = None
    train_seconds: float | None = None
    base_model: str | None = None
    base_model_is_hub_id: bool = False
    training_args: dict[str, Any] = field(default_factory=dict)
    eval_results: list[dict[str, Any]] = field(default_factory=list)
    has_sample_grid: bool = False

    @property
    def dataset_is_hub_id(self) -> bool:
        return self.dataset_kind == "hub"

    @property
    def uses_smd(self) -> bool:
        return self.objective in ("smd", "smd-mixture")

    @property
    def uses_etsdm(self) -> bool:
        return self.etsdm_threshold is not None and self.etsdm_threshold > 0


def _read_json(path: Path) -> Any | None:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _parameter_counts(component_dir: Path) -> dict[str, int] | None:
    """Parameters per top-level submodule of a component's safetensors weights, from the file headers only."""
    from safetensors import safe_open

    index = _read_json(component_dir / "diffusion_pytorch_model.safetensors.index.json")
    if index is not None:
        files = sorted({component_dir / name for name in index["weight_map"].values()})
    else:
        files = [component_dir / "diffusion_pytorch_model.safetensors"]
    if not all(f.is_file() for f in files):
        return None
    counts: dict[str, int] = {}
    for file in files:
        with safe_open(str(file), framework="numpy") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                module = key.split(".")[0]
                counts[module] = counts.get(module, 0) + math.prod(handle.get_slice(key).get_shape())
    return counts


def _looks_like_hub_id(value: str, folder: Path) -> bool:
    """True for ``name`` or ``namespace/name`` that is not a local path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if (
        os.path.isabs(value)
        or value.startswith((".", "~"))
        or (folder / value).exists()
        or os.path.exists(value)
    ):
        return False
    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def _training_data(args: dict, summary: dict, folder: Path) -> tuple[str | None, str | None, int | None]:
    """(kind, name, number of images) of the training data, from the flags first, then the run summary."""
    description = summary.get("dataset") if isinstance(summary.get("dataset"), str) else None
    match = _DATASET_SIZE.search(description) if description else None
    size = int(match.group(1).replace(",", "")) if match else None
    if args.get("train_data_dir"):
        return "local", None, size
    name = args.get("dataset_name")
    if name is None and description is not None:
        name = (
            "digits"
            if description.startswith("built-in digits")
            else description[: match.start()].strip()
            if match
            else description
        )
    if name is None:
        return None, None, None
    if name in _BUILTIN_DATASETS:
        return "builtin", name, size
    return ("hub", name, size) if _looks_like_hub_id(name, folder) else ("local", None, size)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def read_run_facts(folder: str | os.PathLike) -> RunFacts:
    """Collect the facts a model card shows from a saved pipeline folder (see the module docstring)."""
    folder = Path(folder)
    model_index = _read_json(folder / "model_index.json")
    if model_index is None:
        raise ValueError(f"folder={str(folder)!r} is not a saved pipeline: it has no model_index.json")
    pipeline_class = model_index["_class_name"]
    if isinstance(pipeline_class, list):  # ["module", "Class"] written for trust_remote_code loading
        pipeline_class = pipeline_class[-1]
    is_smd_pipeline = "diffusers_smd" in json.dumps(model_index) or pipeline_class == "SMDPipeline"

    facts = RunFacts(pipeline_class=pipeline_class, is_smd_pipeline=is_smd_pipeline)
    unet_entry = model_index.get("unet")
    if isinstance(unet_entry, list) and len(unet_entry) == 2:
        facts.unet_class = unet_entry[1]
    unet_config = _read_json(folder / "unet" / "config.json") or {}
    facts.unet_class = unet_config.get("_class_name", facts.unet_class)
    # An SMD UNet wraps a diffusers UNet: its config nests the backbone's config under "unet_config".
    facts.smd_config = (
        {k: v for k, v in unet_config.items() if k != "unet_config"} if "unet_config" in unet_config else {}
    )
    facts.unet_config = unet_config.get("unet_config") or unet_config
    counts = _parameter_counts(folder / "unet") if (folder / "unet").is_dir() else None
    if counts:
        facts.unet_parameters = sum(counts.values())
        if facts.smd_config and "unet" in counts:
            facts.smd_parameters = facts.unet_parameters - counts["unet"]
    facts.scheduler_config = _read_json(folder / "scheduler" / "scheduler_config.json") or {}
    facts.scheduler_class = facts.scheduler_config.get("_class_name")
    facts.etsdm_threshold = facts.scheduler_config.get("etsdm_threshold")
    facts.etsdm_intervals = facts.scheduler_config.get("etsdm_intervals")

    args = _read_json(folder / "training_args.json") or {}
    # A token must never be on a card, whatever a training script wrote.
    facts.training_args = {k: v for k, v in args.items() if "token" not in k.lower() and v is not None}
    summary = _read_json(folder / "run_summary.json") or {}
    etsdm_summary = summary.get("etsdm") if isinstance(summary.get("etsdm"), dict) else {}
    if etsdm_summary.get("enabled") is False:
        etsdm_summary = {}
    if facts.etsdm_threshold is None:  # a plain scheduler was saved: fall back to what training recorded
        facts.etsdm_threshold = _first(etsdm_summary.get("threshold"), summary.get("etsdm_threshold"))
        facts.etsdm_intervals = _first(etsdm_summary.get("intervals"), summary.get("etsdm_intervals"))
        if facts.etsdm_threshold is None and args.get("etsdm"):
            facts.etsdm_threshold, facts.etsdm_intervals = (
                args.get("etsdm_threshold"),
                args.get("etsdm_intervals"),
            )

    facts.objective = _first(summary.get("objective"), args.get("objective"))
    facts.global_step = summary.get("global_step")
    facts.dataset_kind, facts.dataset, facts.dataset_size = _training_data(args, summary, folder)
    facts.resolution = _first(
        summary.get("resolution"), args.get("resolution"), facts.unet_config.get("sample_size")
    )
    facts.final_loss = summary.get("final_loss")
    facts.train_seconds = _first(summary.get("wall_clock_seconds"), summary.get("train_seconds"))
    facts.base_model = _first(summary.get("base_model"), args.get("pretrained_model_name_or_path"))
    if facts.base_model is not None:
        facts.base_model_is_hub_id = _looks_like_hub_id(facts.base_model, folder)

    eval_results = _read_json(folder / "eval_results.json") or []
    facts.eval_results = [row for row in eval_results if isinstance(row.get("value"), int | float)]
    facts.has_sample_grid = (folder / "sample_grid.png").is_file()
    return facts


def _headline_flags(facts: RunFacts) -> list[str]:
    """The flags worth a row: the run's own settings, not those of methods it did not use."""
    names = [n for n in _HEADLINE_FLAGS if n in facts.training_args]
    if not facts.uses_smd:
        names = [n for n in names if not n.startswith("smd_")]
    if facts.objective != "smd-mixture":
        names = [n for n in names if n != "smd_mixture_samples"]
    if not facts.uses_etsdm:
        names = [n for n in names if not n.startswith("etsdm_")]
    if facts.training_args.get("max_train_steps") is not None:
        names = [n for n in names if n != "num_epochs"]  # the step budget decides, not the epoch count
    return names


def _format_number(value: float) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


_OBJECTIVE_TEXT = {
    "vanilla": "the standard DDPM noise-prediction objective",
    "smd": "the Soft Mixture Denoising (SMD) objective",
    "smd-mixture": "the Soft Mixture Denoising objective with several mixture samples per example (smd-mixture)",
}


def _describe_dataset(facts: RunFacts) -> str | None:
    if facts.dataset_kind is None:
        return None
    if facts.dataset_kind == "builtin":
        text = _BUILTIN_DATASETS[facts.dataset]
    elif facts.dataset_kind == "hub":
        text = f"[{facts.dataset}](https://huggingface.co/datasets/{facts.dataset})"
    else:
        text = "a local image folder"
    if facts.dataset_size is not None:
        text += f" ({facts.dataset_size:,} training images)"
    return text


def _describe_base_model(facts: RunFacts) -> str | None:
    if facts.base_model is None:
        return None
    if facts.base_model_is_hub_id:
        return f"[{facts.base_model}](https://huggingface.co/{facts.base_model})"
    return "a local pretrained model"


def _summary(facts: RunFacts) -> str:
    kind = "An unconditional image diffusion model"
    if facts.unet_config.get("num_class_embeds"):
        kind = "A class-conditional image diffusion model"
    parts = [f"{kind} (a diffusers `{facts.pipeline_class}`)"]
    if facts.objective in _OBJECTIVE_TEXT:
        parts.append(f", trained with {_OBJECTIVE_TEXT[facts.objective]}")
    if facts.uses_etsdm:
        parts.append(
            f" and early timestep-shared conditioning (E-TSDM: timesteps below {facts.etsdm_threshold} "
            f"share {facts.etsdm_intervals} conditions)"
        )
    dataset = _describe_dataset(facts)
    if dataset is not None:
        parts.append(f" on {dataset}")
    parts.append(".")
    base = _describe_base_model(facts)
    if base is not None:
        parts.append(f" Fine-tuned from {base}.")
    parts.append(" Trained and published with [diffusers-smd](https://pypi.org/project/diffusers-smd/).")
    return "".join(parts)


def _details(facts: RunFacts) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = [("Pipeline", f"`{facts.pipeline_class}`")]
    if facts.objective is not None:
        rows.append(("Training objective", f"`{facts.objective}`"))
    if facts.uses_etsdm:
        rows.append(
            (
                "E-TSDM",
                f"threshold {facts.etsdm_threshold}, {facts.etsdm_intervals} shared-condition intervals",
            )
        )
    else:
        rows.append(("E-TSDM", "not used"))
    if facts.unet_class is not None:
        rows.append(("Denoiser", f"`{facts.unet_class}`"))
    if facts.unet_parameters is not None:
        count = f"{facts.unet_parameters:,}"
        if facts.smd_parameters is not None:
            backbone = facts.unet_parameters - facts.smd_parameters
            count += f" ({backbone:,} in the UNet backbone, {facts.smd_parameters:,} in the SMD modules)"
        rows.append(("Denoiser parameters", count))
    if facts.smd_config.get("latent_dim") is not None:
        smd = f"latent dimension {facts.smd_config['latent_dim']}"
        if facts.smd_config.get("num_hypernet_layers") is not None:
            smd += f", {facts.smd_config['num_hypernet_layers']} hypernetwork layers"
        rows.append(("SMD mixture modules", smd))
    channels = facts.unet_config.get("block_out_channels")
    if channels:
        rows.append(("UNet block channels", ", ".join(str(c) for c in channels)))
    if facts.unet_config.get("in_channels") is not None:
        rows.append(("Image channels", str(facts.unet_config["in_channels"])))
    if facts.resolution is not None:
        rows.append(("Resolution", f"{facts.resolution} x {facts.resolution}"))
    if facts.scheduler_class is not None:
        scheduler = f"`{facts.scheduler_class}`"
        steps = facts.scheduler_config.get("num_train_timesteps")
        if steps is not None:
            scheduler += f", {steps} training timesteps"
        if facts.scheduler_config.get("beta_schedule") is not None:
            scheduler += f", `{facts.scheduler_config['beta_schedule']}` betas"
        if facts.scheduler_config.get("prediction_type") is not None:
            scheduler += f", predicts `{facts.scheduler_config['prediction_type']}`"
        rows.append(("Scheduler", scheduler))
    if facts.global_step is not None:
        rows.append(("Training steps", f"{facts.global_step:,}"))
    dataset = _describe_dataset(facts)
    if dataset is not None:
        rows.append(("Training data", dataset))
    base = _describe_base_model(facts)
    if base is not None:
        rows.append(("Base model", base))
    if facts.final_loss is not None:
        rows.append(("Final training loss", _format_number(float(facts.final_loss))))
    if facts.train_seconds is not None:
        rows.append(("Training time", _format_duration(float(facts.train_seconds))))
    return rows


def _loading_snippets(facts: RunFacts, repo_id: str) -> list[dict[str, str]]:
    sample = "images = pipe(batch_size=4, num_inference_steps=50, generator=torch.manual_seed(0)).images"
    if not facts.is_smd_pipeline:
        return [
            {
                "title": "With diffusers",
                "code": f'import torch\nfrom diffusers import DiffusionPipeline\n\npipe = DiffusionPipeline.from_pretrained("{repo_id}")\n{sample}',
            }
        ]
    if facts.uses_etsdm:
        swap_import = "from diffusers_smd import ETSDMDPMSolverMultistepScheduler, SMDPipeline"
        swap_class = "ETSDMDPMSolverMultistepScheduler"
        swap_note = "an E-TSDM DPM-Solver++ keeps the shared conditions of training"
    else:
        swap_import = (
            "from diffusers import DPMSolverMultistepScheduler\n\nfrom diffusers_smd import SMDPipeline"
        )
        swap_class = "DPMSolverMultistepScheduler"
        swap_note = "any diffusers scheduler works"
    return [
        {
            "title": "1. Import diffusers_smd, then load with diffusers",
            "code": f'import torch\nimport diffusers_smd  # registers the SMD classes\nfrom diffusers import DiffusionPipeline\n\npipe = DiffusionPipeline.from_pretrained("{repo_id}")\n{sample}',
        },
        {
            "title": "2. Without importing diffusers_smd (it must be installed): trust_remote_code",
            "code": (
                "import torch\nfrom diffusers import DiffusionPipeline\n\n"
                "# The repo's shim files only import classes from the installed diffusers_smd package.\n"
                f'pipe = DiffusionPipeline.from_pretrained("{repo_id}", trust_remote_code=True)\n{sample}'
            ),
        },
        {
            "title": "3. The pipeline class directly, in half precision on a GPU",
            "code": (
                "import torch\nfrom diffusers_smd import SMDPipeline\n\n"
                'device = "cuda" if torch.cuda.is_available() else "cpu"\n'
                'dtype = torch.float16 if device == "cuda" else torch.float32\n'
                f'pipe = SMDPipeline.from_pretrained("{repo_id}", torch_dtype=dtype).to(device)\n'
                "images = pipe(batch_size=4, num_inference_steps=50, generator=torch.manual_seed(0)).images"
            ),
        },
        {
            "title": f"4. Fewer steps with another scheduler ({swap_note})",
            "code": (
                f"import torch\n{swap_import}\n\n"
                f'pipe = SMDPipeline.from_pretrained("{repo_id}")\n'
                f"pipe.scheduler = {swap_class}.from_config(pipe.scheduler.config)\n"
                "images = pipe(batch_size=4, num_inference_steps=10, generator=torch.manual_seed(0)).images"
            ),
        },
    ]


def _eval_rows(facts: RunFacts) -> list[dict[str, str]]:
    rows = []
    for row in facts.eval_results:
        steps = row.get("num_inference_steps")
        samples = row.get("num_samples")
        rows.append(
            {
                "metric": f"`{row.get('metric', 'unnamed metric')}`",
                "scheduler": f"`{row['scheduler']}`" if row.get("scheduler") else "pipeline default",
                "steps": str(steps) if steps is not None else "pipeline default",
                "value": _format_number(row["value"]),
                "num_samples": f"{samples:,}" if isinstance(samples, int) else "not recorded",
            }
        )
    return rows


def _card_data(facts: RunFacts, license: str) -> ModelCardData:
    data = ModelCardData(
        license=license,
        pipeline_tag="unconditional-image-generation",
        datasets=[facts.dataset] if facts.dataset_is_hub_id else None,
        base_model=facts.base_model if facts.base_model_is_hub_id else None,
    )
    tags = ["diffusers", "diffusers-smd", "unconditional-image-generation"]
    if facts.uses_smd:
        tags += ["smd", "soft-mixture-denoising"]
    if facts.uses_etsdm:
        tags.append("e-tsdm")
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n")
    populate_model_card(card, tags=tags)  # diffusers' own helper: library_name + tags
    return card.data


def render_model_card(folder: str | os.PathLike, repo_id: str, *, license: str = "apache-2.0") -> ModelCard:
    """Render the Hub model card (README.md) of a saved pipeline folder for ``repo_id``.

    Metadata: ``library_name: diffusers``, ``pipeline_tag: unconditional-image-generation``,
    ``tags``, ``license``, ``datasets`` (Hub data sets only) and ``base_model`` (Hub models only).
    Body: what the model is, one loading snippet per supported loading path, the sample grid,
    the evaluation table and how to cite the methods it uses.
    """
    if not isinstance(license, str) or not license.strip():
        raise ValueError(f"license must be a non-empty string such as 'apache-2.0', got {license!r}")
    facts = read_run_facts(folder)
    cited = [p for p, used in ((_SMD_PAPER, facts.uses_smd), (_ETSDM_PAPER, facts.uses_etsdm)) if used]
    others = [p for p in (_SMD_PAPER, _ETSDM_PAPER, _DILATION_PAPER) if p not in cited]
    if cited:
        citation_intro = "If you use this model, please cite the methods it was trained with:"
    else:
        citation_intro = "This model uses neither SMD nor E-TSDM, so there is no method paper to cite for it."
    training_args_json = (
        json.dumps(facts.training_args, indent=2, sort_keys=True) if facts.training_args else None
    )
    hyperparameters = [
        (name, value if isinstance(value, str) else json.dumps(value))
        for name, value in ((n, facts.training_args[n]) for n in _headline_flags(facts))
    ]
    caption = "A grid of samples drawn from this model at the end of training"
    how = [f"step {facts.global_step:,}"] if facts.global_step is not None else []
    if facts.scheduler_class is not None:
        how.append(f"`{facts.scheduler_class}`")
    if isinstance(facts.training_args.get("ddpm_num_inference_steps"), int):
        how.append(f"{facts.training_args['ddpm_num_inference_steps']} denoising steps")
    if how:
        caption += f" ({', '.join(how)})"
    template = resources.files("diffusers_smd").joinpath("assets", "model_cards", MODEL_CARD_TEMPLATE)
    return ModelCard.from_template(
        _card_data(facts, license),
        template_str=template.read_text(encoding="utf-8"),
        model_name=repo_id.split("/")[-1],
        summary=_summary(facts),
        details=_details(facts),
        hyperparameters=hyperparameters,
        training_args_json=training_args_json,
        loading_snippets=_loading_snippets(facts, repo_id),
        has_sample_grid=facts.has_sample_grid,
        sample_grid_caption=caption + ".",
        eval_rows=_eval_rows(facts),
        citation_intro=citation_intro,
        cited_papers=cited,
        other_papers=others,
    )
