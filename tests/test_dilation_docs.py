"""docs/dilation.md's quick start runs as written and prints what its comments say."""

import contextlib
import io
import pathlib
import re

import pytest
import torch

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "dilation.md"


def test_quick_start_runs_and_its_comments_hold():
    block = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)[0]
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(block, str(DOCS), "exec"), namespace)  # noqa: S102 - our own documentation
    target, pipe = namespace["target"], namespace["pipe"]
    plain_pipe = namespace["DilationPathPipeline"](namespace["DilationPathScheduler"]())
    plain = plain_pipe(
        target, num_inference_steps=20, num_samples=1000, generator=torch.Generator().manual_seed(0)
    )
    found = target.mode_weights_of(plain.samples)
    assert 0.2 < float(found[0]) < 0.35  # both modes, masses near (0.2, 0.8): 0.28 / 0.72 as the comment says
    out = pipe(
        target,
        num_samples=1000,
        num_inference_steps=20,
        generator=torch.Generator().manual_seed(0),
        reweight_modes=True,
        metropolis_steps=20,
    )
    assert sorted(out.mode_weights.tolist()) == pytest.approx([0.2, 0.8], abs=0.03)
    assert abs(out.log_Z) < 0.05
    assert out.num_gradient_evaluations == 1000 * (20 * 10 + 20)
    assert out.num_log_density_evaluations == 20 * 1000
    assert namespace["out"].samples.shape == (500, 2)  # the autograd example ran last


def test_the_baseline_snippet_runs_as_written():
    block = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)[1]
    namespace: dict = {"torch": torch}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(block, str(DOCS), "exec"), namespace)  # noqa: S102 - our own documentation
    out = namespace["out"]
    assert out.num_gradient_evaluations == 500 * 200
    assert abs(out.log_Z) < 0.3  # log Z = 0 for the normalised MoG-40; SMC with 500 particles
