"""Read one ``## `` section of the README, for tests that run or check its text."""

import pathlib

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def readme_section(title: str) -> str:
    """The text of README.md from the heading ``## {title}`` up to the next ``## `` heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]
