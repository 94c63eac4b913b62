import subprocess
import sys

import diffusers_smd


def test_public_names_are_importable_from_the_top_level():
    for name in diffusers_smd.__all__:
        assert hasattr(diffusers_smd, name), name


def test_public_classes_record_the_top_level_package_as_their_module():
    own = [getattr(diffusers_smd, n) for n in diffusers_smd.__all__]
    own = [c for c in own if isinstance(c, type) and c.__module__.startswith("diffusers_smd")]
    assert all(c.__module__ == "diffusers_smd" for c in own)


def test_import_in_a_fresh_process(subprocess_env):
    out = subprocess.run(
        [sys.executable, "-c", "import diffusers_smd; print(diffusers_smd.__version__)"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == diffusers_smd.__version__


def test_the_default_training_logger_is_a_runtime_dependency():
    """`pip install .` must be enough for the quickstart, which trains with the default --logger."""
    import pathlib
    import re
    import tomllib

    from diffusers_smd.training import TrainingConfig

    pyproject = tomllib.loads((pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    runtime = {
        re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0].lower() for d in pyproject["project"]["dependencies"]
    }
    default_logger = TrainingConfig().logger
    assert default_logger in runtime
