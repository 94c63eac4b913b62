"""The Hub model card (README.md) of a saved pipeline folder, rendered from the facts the folder records.

Facts: ``model_index.json`` (pipeline and component classes: :class:`SavedPipeline`), ``run_summary.json``
(:class:`~diffusers_smd.training.RunSummary`), ``eval_results.json`` (rows of ``diffusers-smd eval``) and
``sample_grid.png``; objective descriptions come from :data:`diffusers_smd.losses.OBJECTIVES`. The text is
the Jinja2 template ``diffusers_smd/assets/model_cards/smd_pipeline.md`` (loading snippets and citations
included); the metadata is a ``huggingface_hub.ModelCardData`` completed by diffusers' ``populate_model_card``.
A missing optional file leaves its section out or says so; a corrupt one raises ValueError naming it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from diffusers.utils.hub_utils import populate_model_card
from huggingface_hub import ModelCard, ModelCardData

from .atomic import read_json
from .losses import OBJECTIVES
from .training.summary import RunSummary

__all__ = ["HEADLINE_SETTINGS", "MODEL_CARD_TEMPLATE", "TASKS", "SavedPipeline", "render_model_card"]

PACKAGE = "diffusers_smd"
MODEL_CARD_TEMPLATE = "smd_pipeline.md"
"""File name of the card template inside ``diffusers_smd/assets/model_cards/``."""

#: Per task (``RunSummary.task``, a Hub pipeline tag): what the model is, and the arguments of a sampling call.
TASKS = {
    "unconditional-image-generation": ("An unconditional image diffusion model", "batch_size=4"),
    "text-to-image": ("A text-to-image diffusion model", '"a photo of an astronaut riding a horse"'),
}
#: ``RunSummary.config`` settings worth a row of their own (every setting is in a collapsed block); the
#: ``smd_`` ones only when the objective trains an SMD model.
HEADLINE_SETTINGS = ("learning_rate", "lr_scheduler", "lr_warmup_steps", "train_batch_size", "gradient_accumulation_steps",
                     "max_train_steps", "use_ema", "mixed_precision", "snr_gamma", "seed", "smd_latent_dim",
                     "smd_hypernet_layers")  # fmt: skip


@dataclass(frozen=True)
class SavedPipeline:
    """What ``model_index.json`` says: the pipeline class, each component's class, which are diffusers-smd's."""

    pipeline_class: str
    components: dict[str, str]
    pipeline_is_ours: bool
    uses_package: bool  # the pipeline or a component is a diffusers_smd class

    @classmethod
    def read(cls, folder: str | os.PathLike) -> SavedPipeline:
        import diffusers_smd

        path = Path(folder) / "model_index.json"
        if not path.is_file():
            raise ValueError(
                f"folder={str(folder)!r} is not a saved pipeline folder (no model_index.json); pass the folder "
                "written by training or save_pretrained"
            )
        index = read_json(path)
        name = index.get("_class_name") if isinstance(index, dict) else None
        name = name[-1] if isinstance(name, list) else name  # ["diffusers_smd_loader", name]: the shim form
        if not isinstance(name, str):
            raise ValueError(f"{path} names no pipeline class (_class_name); repair or re-save it")
        entries = [
            (k, v) for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and len(v) == 2
        ]
        ours = isinstance(getattr(diffusers_smd, name, None), type)
        inside = any(str(library).split(".")[0] == PACKAGE for _, (library, _) in entries)
        return cls(name, {k: c for k, (_, c) in entries if isinstance(c, str)}, ours, ours or inside)


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _hub_id(name: str | None) -> str | None:
    """``name`` when it is a Hub repo id rather than a local path, else None."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name is None or os.path.exists(name):
        return None
    try:
        return validate_repo_id(name) or name
    except HFValidationError:
        return None


def _describe(saved: SavedPipeline, s: RunSummary | None) -> tuple[str, list[tuple[str, str]]]:
    """The card's opening paragraph and the rows of its details table."""
    components = ", ".join(f"{name}: `{cls}`" for name, cls in saved.components.items())
    rows = [("Pipeline", f"`{saved.pipeline_class}`"), ("Components", components)]
    if s is None:
        return f"A diffusers `{saved.pipeline_class}`; this folder does not record how it was trained.", rows
    objective = OBJECTIVES[s.objective].description if s.objective in OBJECTIVES else f"`{s.objective}`"
    data = {
        "builtin": f"the built-in `{s.dataset}` data set of diffusers-smd",
        "hub": f"[{s.dataset}](https://huggingface.co/datasets/{s.dataset})",
        "folder": "a local image folder",
        "memory": "images given in Python",
    }[s.dataset_kind] + f" ({s.dataset_size:,} training images)"
    base = _hub_id(s.base_model)
    base = f"[{base}](https://huggingface.co/{base})" if base else s.base_model and "a local pretrained model"
    etsdm = f"threshold {s.etsdm['threshold']}, {s.etsdm['intervals']} shared-condition intervals"
    counts = s.parameter_counts
    total, trainable, smd = counts.get("total"), counts.get("trainable"), counts.get("smd_modules")
    lora = bool(total and trainable is not None and trainable != total)

    kind = TASKS.get(s.task, (f"A `{s.task}` diffusion model",))[0]
    text = f"{kind} (a diffusers `{saved.pipeline_class}` with a `{s.model_class}` denoiser), trained with "
    text += objective + (f", with early timestep sharing (E-TSDM: {etsdm})" if s.uses_etsdm else "")
    text += f", on {data}." + (f" Fine-tuned from {base}." if base else "")
    text += f" {trainable:,} of its {total:,} parameters were trained." if lora else ""
    text += " Trained and published with [diffusers-smd](https://pypi.org/project/diffusers-smd/)."
    split = f" ({counts['unet']:,} in the UNet backbone, {smd:,} in the SMD modules)" if smd else ""
    channels = f", {s.num_channels} channel{'s' * (s.num_channels != 1)}" if s.num_channels else ""
    rows += [
        ("Task", f"`{s.task}`"),
        ("Training objective", f"`{s.objective}`"),
        ("E-TSDM", etsdm if s.uses_etsdm else "not used"),
        ("Denoiser parameters", total and f"{total:,}{split}"),
        ("Trained parameters", lora and f"{trainable:,}"),
        ("Noise scheduler", f"`{s.noise_scheduler}`, {s.num_train_timesteps} training timesteps, predicts `{s.prediction_type}`"),
        ("Resolution", s.resolution and f"{s.resolution} x {s.resolution}{channels}"),
        ("Training data", data),
        ("Base model", base),
        ("Training steps", f"{s.global_step:,}"),
        ("Total batch size", f"{s.total_batch_size:,} ({s.num_processes} process{'es' * (s.num_processes != 1)})"),
        ("Final training loss", s.final_loss is not None and _number(float(s.final_loss))),
        ("Training time", _duration(s.wall_clock_seconds)),
        ("diffusers-smd version", s.package_version),
    ]  # fmt: skip
    return text, [(label, value) for label, value in rows if value]


def _eval_rows(folder: Path) -> list[tuple[str, ...]]:
    """(metric, scheduler, steps, value, samples) of each numeric entry of ``eval_results.json``."""
    path = folder / "eval_results.json"
    entries = read_json(path) if path.is_file() else []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(
            f"{path} is not a list of results as `diffusers-smd eval` writes; repair or remove it"
        )
    return [
        (
            f"`{e.get('metric', 'unnamed metric')}`",
            f"`{e['scheduler']}`" if e.get("scheduler") else "pipeline default",
            str(e.get("num_inference_steps") or "pipeline default"),
            _number(e["value"]),
            f"{e['num_samples']:,}" if isinstance(e.get("num_samples"), int) else "not recorded",
        )
        for e in entries
        if isinstance(e.get("value"), int | float) and not isinstance(e["value"], bool)
    ]


def _sample_grid_caption(saved: SavedPipeline, s: RunSummary | None, settings: dict) -> str:
    """What ``sample_grid.png`` shows: samples of the training grid's sampler, or (text-to-image) one image per
    validation prompt through the saved pipeline's own scheduler."""
    prompts = settings.get("validation_prompts")
    if s is not None and s.task == "text-to-image" and prompts:
        how = [f"step {s.global_step:,}", f"`{saved.components.get('scheduler', 'the pipeline scheduler')}`"]
        if isinstance(settings.get("validation_num_inference_steps"), int):
            how.append(f"{settings['validation_num_inference_steps']} denoising steps")
        shown = "; ".join(f'"{prompt}"' for prompt in prompts)
        return f"Validation images drawn at the end of training ({', '.join(how)}), one per prompt: {shown}"
    how = [f"step {s.global_step:,}", f"`{s.noise_scheduler}`"] if s else []
    if isinstance(settings.get("ddpm_num_inference_steps"), int):
        how.append(f"{settings['ddpm_num_inference_steps']} denoising steps")
    return "A grid of samples drawn from this model at the end of training" + (
        f" ({', '.join(how)})" if how else ""
    )


def render_model_card(folder: str | os.PathLike, repo_id: str, *, license: str = "apache-2.0") -> ModelCard:
    """Render the Hub model card (README.md) of a saved pipeline folder for ``repo_id``.

    Metadata: ``library_name: diffusers``, ``pipeline_tag`` (the run's task), ``tags``, ``license``,
    ``datasets`` (Hub data sets only) and ``base_model`` (Hub models only). Body: what the model is, the
    details table, the headline hyper-parameters and every setting, one loading snippet per loading path,
    the sample grid, the evaluation table and the papers of the methods used.
    """
    if not isinstance(license, str) or not license.strip():
        raise ValueError(f"license must be a non-empty string such as 'apache-2.0', got {license!r}")
    folder = Path(folder)
    saved, s = SavedPipeline.read(folder), RunSummary.read(folder)
    summary, details = _describe(saved, s)
    settings = {
        k: v for k, v in (s.config if s else {}).items() if v is not None and "token" not in k.lower()
    }
    uses_smd = bool(s and s.objective in OBJECTIVES and OBJECTIVES[s.objective].needs_mixture_model)
    uses_etsdm = bool(s and s.uses_etsdm)
    headline = [name for name in HEADLINE_SETTINGS if uses_smd or not name.startswith("smd_")]
    caption = _sample_grid_caption(saved, s, settings)
    tags = ["diffusers", "diffusers-smd", *([s.task] if s else [])]
    tags += ["smd", "soft-mixture-denoising"] * uses_smd + ["e-tsdm"] * uses_etsdm
    data = ModelCardData(
        license=license,
        pipeline_tag=s.task if s and s.task in TASKS else None,
        datasets=[s.dataset] if s and s.dataset_kind == "hub" else None,
        base_model=_hub_id(s.base_model) if s else None,
    )
    template = resources.files(PACKAGE).joinpath("assets", "model_cards", MODEL_CARD_TEMPLATE)
    card = ModelCard.from_template(
        data,
        template_str=template.read_text(encoding="utf-8"),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        summary=summary,
        details=details,
        hyperparameters=[
            (k, v if isinstance(v, str) else json.dumps(v)) for k, v in settings.items() if k in headline
        ],
        settings_json=json.dumps(settings, indent=2, sort_keys=True) if settings else None,
        pipeline=saved,
        sample_call=TASKS.get(s.task if s else "", TASKS["unconditional-image-generation"])[1],
        sample_grid_caption=(folder / "sample_grid.png").is_file() and caption + ".",
        eval_rows=_eval_rows(folder),
        trained_known=s is not None,
        uses_smd=uses_smd,
        uses_etsdm=uses_etsdm,
    )
    return populate_model_card(card, tags=tags)  # diffusers' helper: library_name "diffusers" and the tags
