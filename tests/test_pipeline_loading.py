"""Every way a user loads a saved SMDPipeline, each import state in its own fresh Python process.

The parent saves a pipeline, a loaded-then-saved copy and a scheduler-swapped copy, stores them also
as Hub repos in a real Hub cache layout (tests/hub_cache.py), and records reference images. Three
child processes then load them: with ``import diffusers_smd`` (path 1, 3, 4), with
``trust_remote_code=True`` and no import (path 2, for folders and repo ids), and with neither (the
error). Images must match the parent's bit for bit (same seed, same numbers).
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DiffusionPipeline

from diffusers_smd import SMDPipeline
from tests.hub_cache import build_hub_cache
from tests.pipeline_testing import ddpm_scheduler, seeded, tiny_unet

CALL = {"batch_size": 2, "num_inference_steps": 3, "output_type": "np"}
SEED = 0


def generate(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe(generator=seeded(SEED), **CALL).images


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Folders, repo ids and reference images the child processes check against."""
    root = tmp_path_factory.mktemp("pipeline_loading")
    pipe = SMDPipeline(unet=tiny_unet(), scheduler=ddpm_scheduler())
    pipe.save_pretrained(root / "saved")
    references = {"saved": generate(pipe)}

    reloaded = DiffusionPipeline.from_pretrained(root / "saved")
    reloaded.save_pretrained(root / "resaved")
    references["resaved"] = generate(reloaded)

    reloaded.scheduler = DDIMScheduler.from_config(reloaded.scheduler.config)
    references["swapped"] = generate(reloaded)
    reloaded.save_pretrained(root / "swapped")

    cache = root / "hub"
    for name in ("saved", "swapped"):
        build_hub_cache(root / name, f"user/{name}", cache)
    for name, images in references.items():
        np.save(root / f"{name}.npy", images)
    return root


def run_child(saved, env, code: str) -> dict:
    env = {
        **env,
        "HF_HUB_CACHE": str(saved / "hub"),
        "HF_MODULES_CACHE": str(saved / "modules"),
        "HF_HOME": str(saved / "hf_home"),
    }
    prelude = f"import json, sys, numpy as np, torch\nROOT = {str(saved)!r}\nCALL = {CALL!r}\n"
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        env=env,
        cwd=saved,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


GENERATE = """
def generate(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe(generator=torch.Generator().manual_seed(0), **CALL).images

def matches(pipe, name):
    return bool(np.array_equal(generate(pipe), np.load(f"{ROOT}/{name}.npy")))
"""


def test_with_the_import_plain_diffusers_loading_returns_smd_pipelines(saved, subprocess_env):
    """Paths 1 (folders), 3 (repo ids through the download path), 4 (SMDPipeline with torch_dtype), 5."""
    report = run_child(
        saved,
        subprocess_env,
        GENERATE
        + """
import diffusers_smd
from diffusers import DiffusionPipeline
out = {}
for source, name in [(f"{ROOT}/saved", "saved"), (f"{ROOT}/resaved", "resaved"), (f"{ROOT}/swapped", "swapped"),
                     ("user/saved", "saved"), ("user/swapped", "swapped")]:
    pipe = DiffusionPipeline.from_pretrained(source)
    out[source] = [type(pipe).__module__, type(pipe).__name__, type(pipe.scheduler).__name__, matches(pipe, name)]
half = diffusers_smd.SMDPipeline.from_pretrained(f"{ROOT}/saved", torch_dtype=torch.float16)
full = diffusers_smd.SMDPipeline.from_pretrained(f"{ROOT}/saved")
out["dtype"] = [str(half.unet.dtype), type(half).__name__,
                all(torch.equal(a, b.half()) for a, b in zip(half.unet.parameters(), full.unet.parameters()))]
print(json.dumps(out))
""",
    )
    expected_scheduler = {"saved": "DDPMScheduler", "resaved": "DDPMScheduler", "swapped": "DDIMScheduler"}
    for source, (module, cls, scheduler, same_images) in ((k, v) for k, v in report.items() if k != "dtype"):
        name = source.rsplit("/", 1)[-1]
        assert (module, cls) == ("diffusers_smd", "SMDPipeline"), source
        assert scheduler == expected_scheduler[name], source
        assert same_images, source
    assert report["dtype"] == ["torch.float16", "SMDPipeline", True]


def test_with_trust_remote_code_and_no_import_the_shims_load_the_installed_package(saved, subprocess_env):
    """Path 2, for folders and for a repo id."""
    report = run_child(
        saved,
        subprocess_env,
        GENERATE
        + """
# diffusers' remote-code loader asks the Hub for the commit hash even when every file is cached; answer that
# one call from the cache's refs/main (everything else goes through diffusers unchanged, offline).
import diffusers.utils.dynamic_modules_utils as dynamic_modules
class CachedInfo:
    sha = open(f"{ROOT}/hub/models--user--saved/refs/main").read()
dynamic_modules.model_info = lambda *args, **kwargs: CachedInfo
from diffusers import DiffusionPipeline
assert "diffusers_smd" not in sys.modules
out = {}
for source, name in [(f"{ROOT}/saved", "saved"), (f"{ROOT}/resaved", "resaved"), (f"{ROOT}/swapped", "swapped"),
                     ("user/saved", "saved")]:
    pipe = DiffusionPipeline.from_pretrained(source, trust_remote_code=True)
    out[source] = [type(pipe).__module__, type(pipe).__name__, type(pipe.scheduler).__name__, matches(pipe, name)]
out["package_from"] = sys.modules["diffusers_smd"].__file__
print(json.dumps(out))
""",
    )
    import diffusers_smd

    assert report.pop("package_from") == diffusers_smd.__file__  # the installed package, not a copy
    for source, (module, cls, _, same_images) in report.items():
        assert (module, cls) == ("diffusers_smd", "SMDPipeline"), source
        assert same_images, source
    assert report[f"{saved}/swapped"][2] == "DDIMScheduler"


def test_without_import_or_flag_the_error_names_both_ways(saved, subprocess_env):
    report = run_child(
        saved,
        subprocess_env,
        """
from diffusers import DiffusionPipeline
out = {}
for source in [f"{ROOT}/saved", "user/saved"]:
    try:
        DiffusionPipeline.from_pretrained(source)
        out[source] = "loaded"
    except ValueError as error:
        out[source] = str(error)
out["imported"] = "diffusers_smd" in sys.modules
print(json.dumps(out))
""",
    )
    assert report.pop("imported") is False  # nothing from the folder ran
    shim = (saved / "saved" / "diffusers_smd_loader.py").read_text()
    for source, message in report.items():
        assert "trust_remote_code=True" in message, source
        assert "diffusers_smd_loader.py" in message, source  # points at the shim, which says the rest
    assert "import diffusers_smd" in shim and "trust_remote_code=True" in shim
    assert "pip install diffusers-smd" in shim


def test_saved_model_index_names_the_package_and_its_shims(saved):
    index = json.loads((saved / "saved" / "model_index.json").read_text())
    assert index["_class_name"] == ["diffusers_smd_loader", "SMDPipeline"]
    shim = (saved / "saved" / "diffusers_smd_loader.py").read_text()
    imports = [line.strip() for line in shim.splitlines() if "import" in line and not line.startswith("#")]
    assert imports == ["from diffusers_smd import SMDPipeline  # noqa: F401"]


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
