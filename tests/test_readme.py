"""The README is the project's front page: two opening commands, one snippet per method, links that work."""

import re

from tests.readme_text import README, REPO_ROOT, readme_section


def _opening_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
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


def test_the_front_page_stays_short():
    """The reference lives in docs/; the README keeps the commands, a snippet per method and the verdicts."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, len(lines)
    assert len(readme_section("Does it work?").strip("\n").splitlines()) <= 60
    for method in ("## SMD", "## E-TSDM", "## The dilation-path sampler", "## Text-to-image fine-tuning"):
        assert any(line.startswith(method) for line in lines), method


def _anchors(path) -> set[str]:
    from pymdownx.slugs import slugify

    slug = slugify(case="lower")
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m.strip(), "-") for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_relative_links_of_the_readmes_lead_to_existing_files_and_headings():
    for page in (README, REPO_ROOT / "model_cards" / "README.md"):
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve()
            assert resolved.exists(), f"{page.name}: broken link {target}"
            if anchor:
                assert anchor in _anchors(resolved), f"{page.name}: no heading for {target}"
