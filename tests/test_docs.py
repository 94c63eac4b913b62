"""The documentation builds, and every command and code block it shows is exercised.

Pages: README.md, model_cards/README.md and every docs/*.md (pages added later are picked up by the glob).
Each fenced code block is classified by its language:

* ``bash`` / ``sh`` / ``shell`` / ``console`` (``$ `` lines): every command is checked by the checker of its
  program (:func:`check_command`): ``diffusers-smd ...`` parses with the real CLI parser (and ``train``
  settings pass the configuration's checks); ``accelerate launch ...`` parses with accelerate's own launch
  parser and the script it names parses its flags; ``python <script>.py ...`` and ``python -m <module> ...``
  run as ``__main__`` until their parser has accepted the flags (then stop); ``pip install`` names this
  project, its extras, a dependency within its bounds or a package the package itself tells users to
  install; ``ruff`` / ``mkdocs`` commands are the ones ``.ci/run`` runs; ``python -m pytest`` names existing
  tests; ``hf`` / ``tensorboard`` are console scripts of installed dependencies. Anything else fails.
  Every ``diffusers-smd`` subcommand shown must also be run end to end by the tests named in
  :data:`RUN_END_TO_END`.
* ``python``: the blocks of a page run in order in one namespace, in a fresh process and a temporary folder, with
  the literal
  :data:`SUBSTITUTIONS` applied (tiny local models for Hub ids, small step counts) after the page's
  :data:`PRELUDES`. A block that cannot run as shown is listed in :data:`COVERED_ELSEWHERE` with the tests
  that exercise its code.
* output and data (no language, ``text``, ``yaml``, ``json``, ``bibtex``, ...): not run.

A block of any other language, a command no checker knows, a stale substitution or a stale listing fails.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import os
import pathlib
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import tomllib

import pytest

from tests.readme_text import GENERATED, REPO_ROOT, Block, doc_pages, fenced_blocks, generated_block

SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
PYTHON_LANGUAGES = {"python", "py"}
#: Blocks that show output, data or configuration, never run.
DATA_LANGUAGES = {"", "text", "yaml", "yml", "json", "toml", "ini", "bibtex", "markdown", "md", "jinja"}

#: ``diffusers-smd`` subcommand -> tests that run it end to end (a subcommand shown in the docs must be here).
RUN_END_TO_END = {
    "train-text-to-image": (
        "tests/test_text_to_image_reliability.py::test_two_cpu_processes_fine_tune_with_lora_and_smd",
        "tests/test_text_to_image_reliability.py::"
        "test_the_command_checks_settings_before_launching_and_launches_the_text_to_image_module",
    ),
    "train": (
        "tests/test_training_distributed.py::test_two_cpu_processes_train_checkpoint_and_save_a_loadable_pipeline",
        "tests/test_reliability.py::test_train_errors_arrive_as_one_line_from_the_parent_and_from_a_training_process",
    ),
    "sample": (
        "tests/test_cli.py::test_sample_writes_a_reproducible_grid_and_never_overwrites",
        "tests/test_cli.py::test_sample_with_each_scheduler_matches_a_loop_with_its_parent",
    ),
    "eval": ("tests/test_cli.py::test_eval_writes_and_updates_eval_results",),
    "publish": (
        "tests/test_hub_publish.py::test_the_diffusers_smd_command_runs_this_publish",
        "tests/test_hub_publish.py::test_cli_old_and_new_flag_spellings_do_the_same",
    ),
    "quickstart": ("tests/test_cli.py::test_quickstart_end_to_end_with_few_steps",),
    "lipschitz": (
        "tests/test_lipschitz.py::test_cli_writes_json_and_png_with_the_values_of_the_definition",
        "tests/test_lipschitz.py::test_cli_measures_a_vector_model_and_the_builtin_digits",
    ),
}

#: (page, a text that occurs in exactly one python block of it) -> tests that exercise what the block shows.
#: Only for blocks that cannot run as shown (fragments with placeholders, uploads to the real Hub).
COVERED_ELSEWHERE = {
    # the README's text-to-image snippet loads the outputs of its two commands: run with them, scaled down
    ("README.md", 'pipe = DiffusionPipeline.from_pretrained("sd-naruto-smd")'): (
        "tests/test_text_to_image_docs.py::test_the_readme_section_runs",
    ),
    # a fine-tuned Stable Diffusion folder at full size: the same calls run on tiny SD / SDXL pipelines
    ("docs/text-to-image-cost.md", "pipe = StableDiffusionPipeline.from_pretrained(smd_fine_tune_folder)"): (
        "tests/test_smd_stock_pipelines.py::test_same_seed_same_images_other_seed_other_images",
    ),
    # needs the real Inception weights (torch-fidelity, a download): the same calls run on a tiny feature network
    ("docs/evaluation.md", 'compute_digits_metrics(samples, "heldout")'): (
        "tests/test_metrics.py::test_fid_and_kid_match_the_formulas_on_the_features_of_a_tiny_network",
        "tests/test_metrics.py::test_missing_inception_weights_say_which_file_from_where_to_where",
    ),
    ("docs/etsdm.md", "sigmas = ..."): (
        "tests/test_etsdm_rule.py::test_float_timesteps_take_float_thresholds_and_any_number_of_intervals",
        "tests/test_etsdm_rule.py::test_float_timesteps_in_continuous_time",
        "tests/test_etsdm_pipelines.py::test_sd3_pipelines_with_flow_matching",
    ),
    # declaring a variant registers it as THE variant of its parent: the block shows the package's own declaration
    ("docs/etsdm.md", "class ETSDMEulerDiscreteScheduler(ETSDMSchedulerMixin, EulerDiscreteScheduler):"): (
        "tests/test_etsdm_api.py::test_the_14_variants_are_importable_from_the_package_and_mapped_from_their_parents",
    ),
    # a trained pipeline folder: the same calls run on a saved tiny pipeline
    ("docs/evidence.md", 'pipeline = SMDPipeline.from_pretrained("path/to/pipeline")'): (
        "tests/test_lipschitz.py::test_measure_lipschitz_equals_the_definition_written_by_hand",
        "tests/test_lipschitz.py::test_result_round_trips_through_json_and_summarises",
        "tests/test_lipschitz.py::test_load_clean_samples_from_tensor_files_digits_and_an_image_folder",
    ),
    (
        "docs/publishing.md",
        'result = publish("path/to/pipeline", "your-username/smd-digits", private=True)',
    ): (
        "tests/test_hub_publish.py::test_upload_sends_exactly_the_dry_run_folder",
        "tests/test_hub_publish.py::test_uploaded_repo_loads_back_in_fresh_processes",
    ),
}

#: Pages whose python blocks (and commands) a page-specific test runs end to end on tiny stand-ins; their
#: commands are still parsed here.
PAGES_RUN_BY = {
    "docs/text-to-image.md": "tests/test_text_to_image_docs.py::test_every_command_and_snippet_of_the_page_runs",
}

#: Code run before a page's python blocks: the names its fragments take as given.
PRELUDES = {
    "docs/etsdm.md": """
import torch
import torch.nn.functional as F
from diffusers_smd import ETSDMDDPMScheduler
from tests.pipeline_testing import tiny_unet

unet = tiny_unet()  # a 1-channel 8x8 UNet2DModel
scheduler = ETSDMDDPMScheduler(num_train_timesteps=100)
x = torch.randn(1, 1, 8, 8)
batch = 2
clean = torch.randn(batch, 1, 8, 8)
noise = torch.randn_like(clean)
""",
}


# -- stand-ins for what the examples load from the Hub ------------------------------------------------------
def _smd_pipeline_folder(folder: pathlib.Path) -> None:
    from diffusers_smd import SMDPipeline
    from tests.pipeline_testing import ddpm_scheduler, smd_unet

    SMDPipeline(unet=smd_unet(), scheduler=ddpm_scheduler()).save_pretrained(folder)


def _cifar_unet_folder(folder: pathlib.Path) -> None:
    """Like google/ddpm-cifar10-32: a 3-channel 32x32 UNet2DModel and its DDPMScheduler at the top level."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).save_pretrained(folder)
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(folder)


def _sd_folder(folder: pathlib.Path) -> None:
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from tests.pipeline_testing import tiny_sd_components

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    components = tiny_sd_components(folder / "tokenizer-source")
    StableDiffusionPipeline(**components, scheduler=scheduler).save_pretrained(folder)


def _sd3_folder(folder: pathlib.Path) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    from tests.pipeline_testing import tiny_sd3_components

    components = tiny_sd3_components(folder / "tokenizer-source")
    StableDiffusion3Pipeline(
        **components, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0)
    ).save_pretrained(folder)


STANDINS = {
    "smd-pipeline": _smd_pipeline_folder,
    "cifar-unet": _cifar_unet_folder,
    "sd": _sd_folder,
    "sd3": _sd3_folder,
}

#: literal text of a python block -> (stand-in folder, or None) and its replacement ("{folder}" is filled in).
SUBSTITUTIONS = {
    'from_pretrained("your-username/smd-digits"': ("smd-pipeline", 'from_pretrained("{folder}"'),
    'publish("path/to/pipeline"': ("smd-pipeline", 'publish("{folder}"'),
    'from_pretrained("google/ddpm-cifar10-32"': ("cifar-unet", 'from_pretrained("{folder}"'),
    'from_pretrained("your-username/sd-etsdm"': ("sd", 'from_pretrained("{folder}"'),
    "StableDiffusionPipeline.from_pretrained(model_path)": (
        "sd",
        'StableDiffusionPipeline.from_pretrained("{folder}")',
    ),
    # the tiny SD3 stand-in has no T5 encoder (text_encoder_3=None), which loading must be told
    "StableDiffusion3Pipeline.from_pretrained(model_path)": (
        "sd3",
        'StableDiffusion3Pipeline.from_pretrained("{folder}", text_encoder_3=None, tokenizer_3=None)',
    ),
    # training and sampling as shown, only shorter: 2 steps instead of 1500, a 2-step grid of 2 images
    "max_train_steps=1500": (None, "max_train_steps=2, ddpm_num_inference_steps=2, eval_batch_size=2"),
    "pipe(target, num_samples=1000,": (None, "pipe(target, num_samples=200, num_inference_steps=10,"),
}


@pytest.fixture(scope="session")
def standin(tmp_path_factory):
    """The path of a stand-in folder, built on first use."""
    built: dict[str, pathlib.Path] = {}

    def get(name: str) -> pathlib.Path:
        if name not in built:
            folder = tmp_path_factory.mktemp("standin") / name
            STANDINS[name](folder)
            built[name] = folder
        return built[name]

    return get


# -- collecting the blocks and commands -----------------------------------------------------------------------
def relative(path: pathlib.Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


@functools.cache
def all_blocks() -> tuple[Block, ...]:
    return tuple(block for page in doc_pages() for block in fenced_blocks(page))


def shell_commands(block: Block) -> list[list[str]]:
    """The simple commands of a shell block: continuation lines joined, comments dropped, split at && || ; |."""
    text = block.text
    if block.language == "console":
        text = "\n".join(line[2:] for line in text.splitlines() if line.startswith("$ "))
    text = re.sub(r"\\\n", " ", text)
    commands = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in lexer:
            if token in (";", "&&", "||", "|", "&"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
        if current:
            commands.append(current)
    return commands


def command_cases() -> list:
    cases = []
    for block in all_blocks():
        if block.language in SHELL_LANGUAGES:
            for argv in shell_commands(block) or [[]]:
                cases.append(pytest.param(block, argv, id=f"{block.where}:{' '.join(argv)[:60]}"))
    return cases


def python_pages() -> list[str]:
    """Pages whose python blocks this file runs (those of :data:`PAGES_RUN_BY` run in their own test)."""
    pages = {relative(b.path) for b in all_blocks() if b.language in PYTHON_LANGUAGES}
    return sorted(pages - set(PAGES_RUN_BY))


def listed(block: Block) -> tuple[str, ...] | None:
    for (page, marker), tests in COVERED_ELSEWHERE.items():
        if relative(block.path) == page and marker in block.text:
            return tests
    return None


def test_id_exists(test_id: str) -> bool:
    """Whether ``tests/x.py::name`` names a test function defined in that file."""
    path, _, name = test_id.partition("::")
    file = REPO_ROOT / path
    if not file.is_file() or not name:
        return False
    tree = ast.parse(file.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.FunctionDef) and node.name == name for node in ast.walk(tree))


test_id_exists.__test__ = False  # a helper, not a test


# -- the checkers -------------------------------------------------------------------------------------------------
class Parsed(Exception):  # noqa: N818 - a signal, not an error
    """Raised from inside a script once its argument parser has accepted the flags."""

    def __init__(self, result, extras=()):
        super().__init__("parsed")
        self.result, self.extras = result, list(extras)


@functools.cache
def pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@functools.cache
def ci_script() -> str:
    return (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")


REPO_FOLDERS = ("training/", "benchmarks/", "docs/", "tests/", "diffusers_smd/", "model_cards/", ".ci/")
INPUT_FOLDER_FLAGS = ("--train_data_dir",)
EXTERNAL_PROGRAMS = {
    "hf": "huggingface_hub's command line (a dependency)",
    "tensorboard": "TensorBoard (a dependency: the default --logger)",
}


def check_repo_paths(argv: list[str]) -> None:
    """Every argument that names a file of this repository names one that exists."""
    for argument in argv:
        value = argument.split("=", 1)[-1].split("::")[0]
        if value.startswith(REPO_FOLDERS):
            assert (REPO_ROOT / value).exists(), f"{value} does not exist in the repository"


def make_input_folders(argv: list[str]) -> None:
    """Create (in the current, temporary folder) the input folders a command names, e.g. ./my_images."""
    for flag in INPUT_FOLDER_FLAGS:
        if flag in argv[:-1]:
            value = argv[argv.index(flag) + 1]
            if not os.path.isabs(value):
                os.makedirs(value, exist_ok=True)


def hidden_options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions if a.help == argparse.SUPPRESS for s in a.option_strings}


def check_cli(argv: list[str], capsys) -> None:
    from diffusers_smd import cli

    parser = cli.build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        assert exit_.code == 0, f"diffusers-smd {' '.join(argv)}: {capsys.readouterr().err.strip()}"
        return
    assert args.command is not None, "a diffusers-smd command needs a subcommand"
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    used = {a.split("=")[0] for a in argv if a.startswith("--")}
    hidden = used & hidden_options(subparsers.choices[args.command])
    assert not hidden, f"the docs use hidden (old) spellings {sorted(hidden)}"
    assert args.command in RUN_END_TO_END, f"no test is listed in RUN_END_TO_END as running `{args.command}`"
    if args.command == "train":
        from diffusers_smd.training import UnconditionalTrainingConfig
        from diffusers_smd.training.arguments import config_from_namespace

        make_input_folders(argv)
        config_from_namespace(UnconditionalTrainingConfig, args).validate()


def parse_script(target: str, argv: list[str], monkeypatch, capsys, module: bool = False) -> Parsed:
    """Run ``target`` (a script path, or a module with ``module=True``) as ``__main__`` until it has parsed ``argv``.

    Training scripts (``run_script``) parse and validate their configuration; any other script stops right
    after its ``argparse`` parser accepted the flags. Nothing else of the script runs.
    """
    from diffusers_smd.training import script as training_script

    real_parse_config = training_script.parse_config
    real_parse_known_args = argparse.ArgumentParser.parse_known_args
    state = {"passthrough": 0}

    def parse_config(config_class, args=None, prog=None):
        state["passthrough"] += 1
        try:
            config = real_parse_config(config_class, args, prog)
        finally:
            state["passthrough"] -= 1
        raise Parsed(config)

    def parse_known_args(self, args=None, namespace=None):
        if state["passthrough"]:  # inside parse_config, or a subparser of the outer call
            return real_parse_known_args(self, args, namespace)
        state["passthrough"] += 1
        try:
            namespace, extras = real_parse_known_args(self, args, namespace)
        finally:
            state["passthrough"] -= 1
        raise Parsed(namespace, extras)

    monkeypatch.setattr(training_script, "parse_config", parse_config)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)
    monkeypatch.setattr(sys, "path", list(sys.path))
    name = target if module else str(REPO_ROOT / target)
    monkeypatch.setattr(sys, "argv", [name, *argv])
    make_input_folders(argv)
    try:
        if module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(name, run_name="__main__")
    except Parsed as parsed:
        assert not parsed.extras, f"{target} does not take {parsed.extras}"
        return parsed
    except SystemExit as exit_:
        assert exit_.code == 0, f"{target} {' '.join(argv)}: {capsys.readouterr().err.strip()}"
        return Parsed(None)
    pytest.fail(f"{target} returned without parsing any flags")


def check_python(argv: list[str], monkeypatch, capsys) -> None:
    if argv[:3] == ["python", "-m", "pytest"]:
        check_repo_paths(argv)
        assert (
            "pytest-xdist" in " ".join(pyproject()["project"]["optional-dependencies"]["test"])
            or "-n" not in argv
        )
        return
    if argv[1] == "-m":
        parse_script(argv[2], argv[3:], monkeypatch, capsys, module=True)
        return
    script = argv[1]
    assert script.endswith(".py") and (REPO_ROOT / script).is_file(), f"no script {script} in the repository"
    parse_script(script, argv[2:], monkeypatch, capsys)


def check_accelerate(argv: list[str], monkeypatch, capsys) -> None:
    from accelerate.commands.launch import launch_command_parser

    assert argv[1] == "launch", "only `accelerate launch` is shown"
    try:
        launch = launch_command_parser().parse_args(argv[2:])
    except SystemExit:
        pytest.fail(f"accelerate launch refuses {argv[2:]}: {capsys.readouterr().err.strip()}")
    script = launch.training_script
    assert (REPO_ROOT / script).is_file(), f"no script {script} in the repository"
    parse_script(script, launch.training_script_args, monkeypatch, capsys)


def check_pip(argv: list[str]) -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    assert argv[1] == "install", "only `pip install` is shown"
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    dependencies = [Requirement(r) for r in project["dependencies"]]
    dependencies += [Requirement(r) for group in extras.values() for r in group]
    hints = "\n".join(p.read_text(encoding="utf-8") for p in (REPO_ROOT / "diffusers_smd").rglob("*.py"))
    for argument in argv[2:]:
        if argument in ("-e", "-U", "--upgrade"):
            continue
        local = re.fullmatch(r"\.(?:\[(?P<extras>[\w,-]+)\])?", argument)
        if local:
            for extra in filter(None, (local["extras"] or "").split(",")):
                assert extra in extras, f"pyproject.toml has no extra [{extra}]"
            continue
        requirement = Requirement(argument)
        name = canonicalize_name(requirement.name)
        if name == canonicalize_name(project["name"]):
            continue
        declared = [d for d in dependencies if canonicalize_name(d.name) == name]
        if declared:
            for version in re.findall(r"==([\w.]+)", argument):
                assert all(d.specifier.contains(version) for d in declared), (
                    f"{argument} is outside {declared}"
                )
            continue
        assert re.search(rf"pip install '?{re.escape(argument)}'?", hints), (
            f"{argument} is neither a dependency nor a package diffusers_smd tells users to install"
        )


def check_command(argv: list[str], monkeypatch, capsys) -> None:
    assert argv, "a shell block with no command"
    check_repo_paths(argv)
    program = argv[0]
    if program == "diffusers-smd":
        check_cli(argv[1:], capsys)
    elif program == "accelerate":
        check_accelerate(argv, monkeypatch, capsys)
    elif program in ("python", "python3"):
        check_python(argv, monkeypatch, capsys)
    elif program == "pip":
        check_pip(argv)
    elif program in ("ruff", "mkdocs"):
        assert " ".join(argv) in ci_script(), f"`{' '.join(argv)}` is not what .ci/run runs"
    elif program in EXTERNAL_PROGRAMS:
        assert shutil.which(program, path=os.path.dirname(sys.executable)), f"{program} is not installed"
    elif program == "export":
        assert all(re.fullmatch(r"[A-Z_]+=\S*", a) for a in argv[1:]), argv
    else:
        pytest.fail(f"no checker for the command `{' '.join(argv)}`: add one to tests/test_docs.py")


# -- the tests ----------------------------------------------------------------------------------------------------
def test_docs_build_with_mkdocs_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (
        tmp_path / "site" / "results" / "evidence_exact" / "exact_lipschitz.png"
    ).is_file()  # the results symlink


def test_every_page_is_in_the_nav():
    from mkdocs.config import load_config

    def files(nav) -> list[str]:
        found = []
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            found += files(value) if isinstance(value, list) else [value]
        return found

    nav = files(load_config(str(REPO_ROOT / "mkdocs.yml"))["nav"])
    pages = sorted(p.name for p in (REPO_ROOT / "docs").glob("*.md"))
    assert sorted(nav) == pages, "list every docs/*.md page in mkdocs.yml's nav (and nothing else)"


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_tables_are_current(name):
    page, make = GENERATED[name]
    current = generated_block(page.read_text(encoding="utf-8"), name)
    assert current is not None, f"{relative(page)} has no <!-- generated:{name} --> block"
    assert current.strip() == make().strip(), f"{relative(page)}: rerun `python -m tests.readme_text --write`"


def test_every_block_is_of_a_known_kind():
    known = SHELL_LANGUAGES | PYTHON_LANGUAGES | DATA_LANGUAGES
    unknown = [f"{b.where} ({b.language})" for b in all_blocks() if b.language not in known]
    assert not unknown, f"blocks of a language no test knows how to exercise: {unknown}"


@pytest.mark.parametrize("block, argv", command_cases())
def test_shell_command(block, argv, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    check_command(argv, monkeypatch, capsys)


def test_every_subcommand_listed_as_run_end_to_end_is_run_by_existing_tests():
    from diffusers_smd import cli

    (subparsers,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    for command, tests in RUN_END_TO_END.items():
        assert command in subparsers.choices, (
            f"RUN_END_TO_END lists {command!r}, not a diffusers-smd subcommand"
        )
        assert tests and all(test_id_exists(t) for t in tests), (command, tests)


#: Runs in a fresh Python process: the blocks of one page, in order, in one namespace (their own module state,
#: registries and random streams never touch the test process). Tracebacks name the page and line.
BLOCK_RUNNER = """
import json, sys
namespace = {"__name__": "__docs__"}
for where, source in json.load(sys.stdin):
    exec(compile(source, where, "exec"), namespace)
"""


@pytest.mark.parametrize("page", python_pages())
def test_python_blocks_run(page, standin, tmp_path, subprocess_env):
    blocks = [b for b in all_blocks() if relative(b.path) == page and b.language in PYTHON_LANGUAGES]
    run = [(f"<prelude of {page}>", PRELUDES[page])] if page in PRELUDES else []
    for block in blocks:
        if listed(block) is not None:
            continue
        source = block.text
        for old, (folder, new) in SUBSTITUTIONS.items():
            if old in source:
                source = source.replace(old, new.format(folder=standin(folder) if folder else ""))
        run.append((block.where, source))
    assert run or all(listed(b) is not None for b in blocks)
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_RUNNER],
        input=json.dumps(run),
        cwd=tmp_path,
        env=subprocess_env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]


def test_listings_and_substitutions_are_used_and_name_existing_tests():
    python_blocks = [b for b in all_blocks() if b.language in PYTHON_LANGUAGES]
    for (page, marker), tests in COVERED_ELSEWHERE.items():
        matches = [b for b in python_blocks if relative(b.path) == page and marker in b.text]
        assert len(matches) == 1, f"COVERED_ELSEWHERE {page!r}: {marker!r} matches {len(matches)} blocks"
        assert tests and all(test_id_exists(t) for t in tests), tests
    for old in SUBSTITUTIONS:
        assert any(old in b.text for b in python_blocks), f"SUBSTITUTIONS entry {old!r} is used by no block"
    for page in PRELUDES:
        assert page in python_pages(), f"PRELUDES entry {page!r} has no python blocks"
    for page, test in PAGES_RUN_BY.items():
        assert (REPO_ROOT / page).is_file() and test_id_exists(test), (page, test)


#: Test files whose every test guards a bad input or a fault: each must appear on the reliability page.
RELIABILITY_TEST_FILES = ("tests/test_reliability.py", "tests/test_training_reliability.py")


def test_tests_named_in_the_docs_exist_and_the_reliability_page_lists_every_reliability_test():
    named = {
        f"{path}::{name}"
        for page in doc_pages()
        for path, name in re.findall(r"(tests/[\w/]+\.py)::(\w+)", page.read_text(encoding="utf-8"))
    }
    missing = sorted(t for t in named if not test_id_exists(t))
    assert not missing, f"the docs name tests that do not exist: {missing}"
    reliability = (REPO_ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    for path in RELIABILITY_TEST_FILES:
        tree = ast.parse((REPO_ROOT / path).read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                assert f"{path}::{node.name}" in reliability, f"docs/reliability.md does not list {node.name}"
