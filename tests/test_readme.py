"""The README's two opening commands are the project's contract with a new user."""

import pathlib
import re

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _opening_commands() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_opens_with_two_single_line_commands():
    commands = _opening_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert "diffusers-smd quickstart" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci_lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert _opening_commands()[1] in ci_lines
