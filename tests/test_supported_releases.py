"""One list of supported Axolotl releases, axolotl_ipo/upstream/releases.txt, that pyproject's
range, the package, scripts/test.sh, scripts/setup_env.sh and scripts/demo.sh agree on
(docker/Dockerfile: tests/test_docker.py)."""

import os
import re
import subprocess
from pathlib import Path

import pytest
import tomllib
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from axolotl_ipo.upstream.axolotl import supported_releases

REPO = Path(__file__).parents[1]
RELEASES_FILE = "axolotl_ipo/upstream/releases.txt"


def listed() -> list[tuple[str, str]]:
    """(release, venv) per line of the file, oldest first."""
    lines = (REPO / RELEASES_FILE).read_text(encoding="utf-8").splitlines()
    return [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#")]


def test_the_file_lists_releases_oldest_first_and_the_package_reads_it():
    releases = [release for release, _ in listed()]
    assert len(releases) >= 2 and all(re.fullmatch(r"\d+\.\d+\.\d+", r) for r in releases)
    assert releases == sorted(releases, key=Version)
    assert supported_releases() == tuple(releases)
    assert listed()[0][1] == ".venv", "scripts/test.sh runs ruff from .venv"


def test_pyproject_range_covers_the_listed_releases_and_stops_after_them():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    requirement = next(d for d in pyproject["project"]["dependencies"] if d.startswith("axolotl"))
    allowed = SpecifierSet(requirement.removeprefix("axolotl"))
    releases = [Version(release) for release, _ in listed()]
    assert all(release in allowed for release in releases), (requirement, releases)
    oldest, newest = releases[0], releases[-1]
    assert Version(f"{newest.major}.{newest.minor + 1}.0") not in allowed, requirement
    assert Version(f"{oldest.major}.{oldest.minor}.0") in allowed, requirement
    if oldest.minor:
        assert Version(f"{oldest.major}.{oldest.minor - 1}.99") not in allowed, requirement


def test_scripts_read_the_file_and_name_no_release_themselves():
    for script in ("scripts/test.sh", "scripts/setup_env.sh", "scripts/demo.sh"):
        text = (REPO / script).read_text(encoding="utf-8")
        named = [release for release, _ in listed() if release in text]
        assert not named, f"{script} names {named}; read {RELEASES_FILE} instead"
    for script in ("scripts/test.sh", "scripts/setup_env.sh"):
        assert RELEASES_FILE in (REPO / script).read_text(encoding="utf-8"), script


VLLM_LANE = ".venv-vllm"  # scripts/test.sh's vLLM-on-CPU lane (scripts/setup_vllm_env.sh)


def fake_repository(tmp_path: Path, failing_venv: str | None = None, code: int = 3) -> Path:
    """A copy of the repository for scripts/test.sh whose setup, assets, ruff and interpreters
    are stand-ins that record their calls. A stand-in pytest waits (up to 20 s) until every
    release's pytest has started, so suites run one after another would fail it; the one in
    `failing_venv` then exits `code`. The vLLM lane's pytest also records
    AXOLOTL_IPO_REQUIRE_VLLM."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "axolotl_ipo/upstream").mkdir(parents=True)
    (tmp_path / RELEASES_FILE).write_text((REPO / RELEASES_FILE).read_text())
    (tmp_path / "scripts/test.sh").write_text((REPO / "scripts/test.sh").read_text())
    log = tmp_path / "calls.log"
    recorder = f'#!/bin/bash\necho "$0 $*" >> {log}\n'
    for script in ("setup_env.sh", "prepare_assets.sh", "setup_vllm_env.sh"):
        (tmp_path / "scripts" / script).write_text(recorder)
    suites = len(listed())
    for venv in [venv for _, venv in listed()] + [VLLM_LANE]:
        (tmp_path / venv / "bin").mkdir(parents=True, exist_ok=True)
        pytest = (f'if [ "$1 $2" = "-m pytest" ]; then\n'
                  f'  echo "require vllm: ${{AXOLOTL_IPO_REQUIRE_VLLM:-unset}}" >> {log}\n'
                  f'  for _ in $(seq 200); do\n'
                  f'    [ "$(grep -c -- "-m pytest" {log})" -ge {suites} ] && break; sleep 0.1\n'
                  f'  done\n'
                  f'  [ "$(grep -c -- "-m pytest" {log})" -ge {suites} ] || exit 9\n'
                  f'  echo "suite of {venv} ran"; exit {code if venv == failing_venv else 0}\n'
                  f'fi\n')
        for tool, text in (("python", recorder + pytest), ("ruff", recorder)):
            (tmp_path / venv / "bin" / tool).write_text(text)
            (tmp_path / venv / "bin" / tool).chmod(0o755)
    return log


def run_test_sh(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(tmp_path / "scripts/test.sh"), "-k", "x"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "AXOLOTL_IPO_VLLM_LANE": "1", **env})


LANE_TESTS = "tests/test_vllm_cpu.py tests/test_upstream.py"


def test_test_sh_builds_and_tests_every_listed_release_in_its_venv_side_by_side(tmp_path):
    log = fake_repository(tmp_path)
    done = run_test_sh(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = log.read_text().splitlines()
    setups = [c.split()[1:] for c in calls if c.split()[0].endswith("/setup_env.sh")]
    assert setups == [list(pair) for pair in listed()]
    lane_setups = [c.split()[1:] for c in calls if c.split()[0].endswith("/setup_vllm_env.sh")]
    assert lane_setups == [[VLLM_LANE]]
    assets = [c.split()[1:] for c in calls if c.split()[0].endswith("prepare_assets.sh")]
    assert assets == [[venv] for _, venv in listed()] + [[VLLM_LANE]]
    runs = [c.split()[0] for c in calls if "-m pytest" in c]  # started side by side: any order
    assert sorted(runs[:-1]) == sorted(f"{venv}/bin/python" for _, venv in listed())
    assert all(c.endswith("-m pytest -q -p no:cacheprovider -k x") for c in calls
               if "-m pytest" in c and VLLM_LANE not in c)
    # the vLLM lane last, on its own tests, where a missing vLLM fails them
    assert runs[-1] == f"{VLLM_LANE}/bin/python"
    assert calls[-1] == "require vllm: 1" and calls.count("require vllm: unset") == len(listed())
    assert calls[-2].endswith(f"-m pytest -q -p no:cacheprovider {LANE_TESTS} -k x")
    # each suite's output is printed whole, in the file's order, the lane's last
    printed = [line for line in done.stdout.splitlines() if line.startswith("suite of ")]
    assert printed == [f"suite of {venv} ran" for _, venv in listed()] + [
        f"suite of {VLLM_LANE} ran"]


@pytest.mark.parametrize("failing", [venv for _, venv in listed()] + [VLLM_LANE])
def test_test_sh_fails_when_any_release_fails_and_still_prints_every_suite(tmp_path, failing):
    fake_repository(tmp_path, failing_venv=failing)
    done = run_test_sh(tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    printed = [line for line in done.stdout.splitlines() if line.startswith("suite of ")]
    assert printed == [f"suite of {venv} ran" for _, venv in listed()] + [
        f"suite of {VLLM_LANE} ran"]


def test_the_vllm_lane_passes_when_the_callers_filter_leaves_it_no_test(tmp_path):
    """pytest's exit 5 (no test selected, e.g. by -m "not e2e") in the lane is not a failure."""
    fake_repository(tmp_path, failing_venv=VLLM_LANE, code=5)
    done = run_test_sh(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_vllm_lane_can_be_left_out(tmp_path):
    log = fake_repository(tmp_path)
    done = run_test_sh(tmp_path, AXOLOTL_IPO_VLLM_LANE="0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert VLLM_LANE not in log.read_text()
