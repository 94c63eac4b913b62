import os
import pathlib

import pytest
import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Tests are small; one thread each keeps a 2-core CI machine responsive under pytest-xdist.
torch.set_num_threads(1)


@pytest.fixture
def subprocess_env():
    """Environment for fresh Python processes: the checkout importable, no network."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    return env
