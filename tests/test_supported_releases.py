"""pyproject's Axolotl range admits exactly the releases the tests run on, and no newer minor."""

import re
from pathlib import Path

import tomllib
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).parents[1]


def test_pyproject_range_covers_the_tested_releases_and_stops_after_them():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    requirement = next(d for d in pyproject["project"]["dependencies"] if d.startswith("axolotl"))
    allowed = SpecifierSet(requirement.removeprefix("axolotl"))
    tested = re.findall(r"setup_env\.sh (\d+\.\d+\.\d+)", (REPO / "scripts/test.sh").read_text())
    assert tested and all(Version(v) in allowed for v in tested), (requirement, tested)
    newest = max(Version(v) for v in tested)
    assert Version(f"{newest.major}.{newest.minor + 1}.0") not in allowed, requirement
