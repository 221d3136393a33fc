"""The README's Python API example runs as written (on a tiny dataset in place of ml100k)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_cli import write_tiny

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_api_example() -> str:
    """The first ```python block after the "## Python API" heading."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md has no python block under ## Python API"
    return match.group(1)


def test_the_readme_api_example_runs(tmp_path, monkeypatch, capsys):
    code = readme_api_example()
    data = re.search(r'open_dataset\("([^"]+)"\)', code).group(1)
    write_tiny(tmp_path / data)  # the example's dataset folder, relative to the working directory
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out
    assert "recall@20" in printed and (tmp_path / "runs").is_dir() and (tmp_path / "results").is_dir()


def test_the_readme_shows_a_plot_and_every_local_link_exists():
    text = README.read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert any(path.endswith(".png") for path in images), "README.md shows no plot"
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" not in target:
            assert (README.parent / target).is_file(), f"README.md links to a missing file: {target}"
