"""The README's study spec is a valid spec as written (only its dataset is replaced)."""

from __future__ import annotations

import re

from robustrec.studies.spec import parse_spec, read_toml
from tests.test_readme import README


def test_the_readme_study_spec_is_valid(tmp_path):
    section = README.read_text(encoding="utf-8").split("\n## Studies", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```toml\n(.*?)```", section, re.S)
    assert match, "README.md has no toml block under ## Studies"
    path = tmp_path / "noise.toml"
    path.write_text(match.group(1))
    spec = parse_spec(read_toml(path), base=tmp_path)
    assert spec.data == str(tmp_path / "data" / "ml100k")
    assert [len(entry.points()) for entry in spec.runs] == [1, 6] and spec.seeds == (1, 2, 3)
    assert spec.audits[0].severities == (1e-6, 1e-4, 1e-2)
