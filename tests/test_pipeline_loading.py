"""Every way a user loads a saved SMDPipeline, each import state in its own fresh Python process.

The parent saves a pipeline, a loaded-then-saved copy and a scheduler-swapped copy, stores two of
them also as Hub repos in a real Hub cache layout (tests/hub_cache.py), and records reference images.
Two child processes then load them: one with ``import diffusers_smd`` (paths 1, 3, 4, 5), one that
never imports it (first without ``trust_remote_code``: the error; then path 2 with it, for folders
and repo ids). Images must match the parent's bit for bit (same seed, same numbers).
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline

from diffusers_smd import ETSDMDPMSolverMultistepScheduler, SMDPipeline, write_loading_shims
from tests.hub_cache import build_hub_cache
from tests.pipeline_testing import ddpm_scheduler, seeded, smd_unet, tiny_unet

EXPECTED_SCHEDULER = {
    "saved": "DDPMScheduler",
    "resaved": "DDPMScheduler",
    "swapped": "ETSDMDPMSolverMultistepScheduler",
}
CALL = {"batch_size": 2, "num_inference_steps": 3, "output_type": "np"}
SEED = 0


def generate(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe(generator=seeded(SEED), **CALL).images


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Folders, repo ids and reference images the child processes check against."""
    root = tmp_path_factory.mktemp("pipeline_loading")
    pipe = SMDPipeline(unet=smd_unet(), scheduler=ddpm_scheduler())
    pipe.save_pretrained(root / "saved")
    references = {"saved": generate(pipe)}

    reloaded = DiffusionPipeline.from_pretrained(root / "saved")
    reloaded.save_pretrained(root / "resaved")
    references["resaved"] = generate(reloaded)

    reloaded.scheduler = ETSDMDPMSolverMultistepScheduler.from_config(reloaded.scheduler.config)
    references["swapped"] = generate(reloaded)
    reloaded.save_pretrained(root / "swapped")

    # A stock diffusers pipeline around an SMD UNet: only the component needs a shim.
    DDPMPipeline(unet=reloaded.unet, scheduler=ddpm_scheduler()).save_pretrained(root / "stock")
    write_loading_shims(root / "stock")

    cache = root / "hub"
    for name in ("saved", "swapped"):
        build_hub_cache(root / name, f"user/{name}", cache)
    for name, images in references.items():
        np.save(root / f"{name}.npy", images)
    return root


GENERATE = """
def generate(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe(generator=torch.Generator().manual_seed(0), **CALL).images

def matches(pipe, name):
    return bool(np.array_equal(generate(pipe), np.load(f"{ROOT}/{name}.npy")))
"""


CHILD_SCRIPTS = {
    "imported": """
import diffusers_smd
from diffusers import DiffusionPipeline
out = {"loaded": {}}
for source, name in [(f"{ROOT}/saved", "saved"), (f"{ROOT}/resaved", "resaved"), (f"{ROOT}/swapped", "swapped"),
                     ("user/saved", "saved"), ("user/swapped", "swapped")]:
    pipe = DiffusionPipeline.from_pretrained(source)
    out["loaded"][source] = [type(pipe).__module__, type(pipe).__name__, type(pipe.scheduler).__name__, matches(pipe, name)]
stock = DiffusionPipeline.from_pretrained(f"{ROOT}/stock")
out["stock"] = [type(stock).__name__, type(stock.unet).__name__]
half = diffusers_smd.SMDPipeline.from_pretrained(f"{ROOT}/saved", torch_dtype=torch.float16)
full = diffusers_smd.SMDPipeline.from_pretrained(f"{ROOT}/saved")
out["dtype"] = [str(half.unet.dtype), type(half).__name__,
                all(torch.equal(a, b.half()) for a, b in zip(half.unet.parameters(), full.unet.parameters()))]
print(json.dumps(out))
""",
    "not_imported": """
# diffusers' remote-code loader asks the Hub for the commit hash even when every file is cached; answer that
# one call from the cache's refs/main (everything else goes through diffusers unchanged, offline).
import diffusers.utils.dynamic_modules_utils as dynamic_modules
class CachedInfo:
    def __init__(self, repo_id, **kwargs):
        self.sha = open(f"{ROOT}/hub/models--{repo_id.replace('/', '--')}/refs/main").read()
dynamic_modules.model_info = CachedInfo
from diffusers import DiffusionPipeline
errors = {}
for source in [f"{ROOT}/saved", "user/saved", f"{ROOT}/stock"]:
    try:
        DiffusionPipeline.from_pretrained(source)
        errors[source] = "loaded"
    except ValueError as error:
        errors[source] = str(error)
imported_after_errors = "diffusers_smd" in sys.modules
# First trusted load: the stock pipeline, whose only diffusers-smd class comes through unet/diffusers_smd.py.
stock = DiffusionPipeline.from_pretrained(f"{ROOT}/stock", trust_remote_code=True)
stock_report = [type(stock).__name__, type(stock.unet).__module__, type(stock.unet).__name__]
loaded = {}
for source, name in [(f"{ROOT}/saved", "saved"), (f"{ROOT}/resaved", "resaved"), (f"{ROOT}/swapped", "swapped"),
                     ("user/saved", "saved"), ("user/swapped", "swapped")]:
    pipe = DiffusionPipeline.from_pretrained(source, trust_remote_code=True)
    loaded[source] = [type(pipe).__module__, type(pipe).__name__, type(pipe.scheduler).__name__, matches(pipe, name)]
print(json.dumps({"errors": errors, "imported_after_errors": imported_after_errors, "loaded": loaded,
                  "stock": stock_report,
                  "package_from": sys.modules["diffusers_smd"].__file__}))
""",
}


def _launch(saved, env, name: str, code: str) -> subprocess.Popen:
    env = {
        **env,
        "HF_HUB_CACHE": str(saved / "hub"),
        "HF_MODULES_CACHE": str(saved / f"modules_{name}"),
        "HF_HOME": str(saved / f"hf_home_{name}"),
    }
    prelude = f"import json, sys, numpy as np, torch\nROOT = {str(saved)!r}\nCALL = {CALL!r}\n"
    return subprocess.Popen(
        [sys.executable, "-c", prelude + textwrap.dedent(GENERATE + code)],
        env=env,
        cwd=saved,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_fresh_processes_load_by_every_path(saved, subprocess_env):
    """Both import states at once, in two fresh processes started together (their imports overlap)."""
    children = {name: _launch(saved, subprocess_env, name, code) for name, code in CHILD_SCRIPTS.items()}
    reports = {}
    for name, child in children.items():
        stdout, stderr = child.communicate(timeout=400)
        assert child.returncode == 0, f"{name}: {stderr[-3000:]}"
        reports[name] = json.loads(stdout.strip().splitlines()[-1])
    check_imported_report(reports["imported"])
    check_not_imported_report(reports["not_imported"], saved)


def check_loaded(loaded: dict) -> None:
    assert len(loaded) == 5
    for source, (module, cls, scheduler, same_images) in loaded.items():
        assert (module, cls) == ("diffusers_smd", "SMDPipeline"), source
        assert scheduler == EXPECTED_SCHEDULER[source.rsplit("/", 1)[-1]], source
        assert same_images, source


def check_imported_report(report: dict) -> None:
    """With ``import diffusers_smd``: paths 1 (folders), 3 (repo ids), 4 (SMDPipeline with torch_dtype), 5."""
    assert report["dtype"] == ["torch.float16", "SMDPipeline", True]
    assert report["stock"] == ["DDPMPipeline", "SMDUNet2DModel"]
    check_loaded(report["loaded"])


def check_not_imported_report(report: dict, saved) -> None:
    """No import: without the flag a clear error and nothing runs; with it (path 2) folders and repo ids load."""
    assert report["imported_after_errors"] is False  # nothing from the folder ran
    shim = (saved / "saved" / "diffusers_smd_loader.py").read_text()
    assert "import diffusers_smd" in shim and "trust_remote_code=True" in shim
    assert "pip install diffusers-smd" in shim
    assert len(report["errors"]) == 3
    for source, message in report["errors"].items():
        assert "trust_remote_code=True" in message, source
        shim = "diffusers_smd.py" if source.endswith("stock") else "diffusers_smd_loader.py"
        assert shim in message, source  # points at the shim, which names the import too
    assert report["stock"] == ["DDPMPipeline", "diffusers_smd", "SMDUNet2DModel"]

    import diffusers_smd

    assert report["package_from"] == diffusers_smd.__file__  # the installed package, not a copy
    check_loaded(report["loaded"])


def shim_imports(path):
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if "import " in line and not line.startswith("#")
    ]


def test_saved_model_index_names_the_package_and_its_shims(saved):
    index = json.loads((saved / "saved" / "model_index.json").read_text())
    assert index["_class_name"] == ["diffusers_smd_loader", "SMDPipeline"]
    assert index["unet"] == ["diffusers_smd", "SMDUNet2DModel"]
    assert index["scheduler"] == ["diffusers", "DDPMScheduler"]
    expected = ["from diffusers_smd import SMDPipeline, SMDUNet2DModel  # noqa: F401"]
    for shim in ("diffusers_smd_loader.py", "unet/diffusers_smd.py"):
        assert shim_imports(saved / "saved" / shim) == expected, shim
    assert not (saved / "saved" / "scheduler" / "diffusers_smd.py").exists()

    swapped = json.loads((saved / "swapped" / "model_index.json").read_text())
    assert swapped["scheduler"] == ["diffusers_smd", "ETSDMDPMSolverMultistepScheduler"]
    names = "ETSDMDPMSolverMultistepScheduler, SMDPipeline, SMDUNet2DModel"
    for shim in ("diffusers_smd_loader.py", "unet/diffusers_smd.py", "scheduler/diffusers_smd.py"):
        assert shim_imports(saved / "swapped" / shim) == [
            f"from diffusers_smd import {names}  # noqa: F401"
        ], shim


def test_write_loading_shims_is_idempotent_repairs_module_paths_and_removes_stale_shims(saved, tmp_path):
    folder = tmp_path / "copy"
    pipe = SMDPipeline.from_pretrained(saved / "swapped")
    pipe.save_pretrained(folder)
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["scheduler"] = [
        "diffusers_smd.schedulers.scheduling_etsdm_dpmsolver_multistep",
        index["scheduler"][1],
    ]
    index_path.write_text(json.dumps(index))
    first = write_loading_shims(folder)
    snapshot = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    shims = ["diffusers_smd_loader.py", "unet/diffusers_smd.py", "scheduler/diffusers_smd.py"]
    assert sorted(write_loading_shims(folder)) == sorted(first) == sorted(shims)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == snapshot
    assert json.loads(index_path.read_text())["scheduler"] == [
        "diffusers_smd",
        "ETSDMDPMSolverMultistepScheduler",
    ]

    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)  # swap back, save over the same folder
    pipe.save_pretrained(folder)
    assert not (folder / "scheduler" / "diffusers_smd.py").exists()
    assert json.loads(index_path.read_text())["scheduler"] == ["diffusers", "DDPMScheduler"]
    user_file = folder / "scheduler" / "diffusers_smd.py"
    user_file.write_text("# the user's own file\n")
    write_loading_shims(folder)
    assert user_file.read_text() == "# the user's own file\n"  # never touches files it did not write
    with pytest.raises(ValueError, match="folder"):
        write_loading_shims(tmp_path / "nothing_here")


def test_loading_a_folder_with_a_missing_component_fails_clearly(saved, tmp_path):
    broken = tmp_path / "broken"
    SMDPipeline.from_pretrained(saved / "saved").save_pretrained(broken)
    index = json.loads((broken / "model_index.json").read_text())
    del index["scheduler"]
    (broken / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="scheduler"):
        DiffusionPipeline.from_pretrained(broken)


def test_loaded_components_keep_their_dtype_and_weights(saved):
    pipe = SMDPipeline.from_pretrained(saved / "saved", torch_dtype=torch.float64)
    assert pipe.unet.dtype == torch.float64


def test_a_plain_class_name_resolves_once_imported_and_stock_pipelines_are_untouched(saved, tmp_path):
    plain = tmp_path / "plain_name"
    SMDPipeline.from_pretrained(saved / "saved").save_pretrained(plain)
    index = json.loads((plain / "model_index.json").read_text())
    index["_class_name"] = "SMDPipeline"  # as diffusers itself writes it, without the loader shim
    (plain / "model_index.json").write_text(json.dumps(index))
    (plain / "diffusers_smd_loader.py").unlink()
    assert type(DiffusionPipeline.from_pretrained(plain)) is SMDPipeline

    stock = tmp_path / "stock"
    DDPMPipeline(unet=tiny_unet(), scheduler=ddpm_scheduler()).save_pretrained(stock)
    assert not (stock / "diffusers_smd_loader.py").exists()
    assert type(DiffusionPipeline.from_pretrained(stock)) is DDPMPipeline
