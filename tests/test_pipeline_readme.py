"""The loading code of docs/loading.md runs as written (a local folder stands in for the Hub repo id)."""

import re

from diffusers import DiffusionPipeline

from diffusers_smd import ETSDMDPMSolverMultistepScheduler, SMDPipeline
from tests.pipeline_testing import ddpm_scheduler, tiny_unet
from tests.readme_text import DOCS, readme_section

REPO_ID = "your-username/smd-digits"


def test_load_a_model_code_blocks_run(tmp_path, monkeypatch):
    folder = tmp_path / "smd-digits"
    SMDPipeline(unet=tiny_unet(), scheduler=ddpm_scheduler()).save_pretrained(folder)
    section = readme_section("Load a model", DOCS / "loading.md")
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3 and all(REPO_ID in block for block in blocks[:2])
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(block.replace(REPO_ID, str(folder)), namespace)  # noqa: S102 - the page's own code
    assert isinstance(namespace["pipe"], SMDPipeline)
    assert len(namespace["images"]) == 16 and (tmp_path / "sample.png").is_file()
    reloaded = DiffusionPipeline.from_pretrained(tmp_path / "smd-digits-dpmsolver")
    assert isinstance(reloaded.scheduler, ETSDMDPMSolverMultistepScheduler)
