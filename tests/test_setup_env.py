"""scripts/setup_env.sh picks torch's source: PyPI's default (CUDA) build only where an NVIDIA GPU
answers `nvidia-smi`; else PyTorch's CPU wheel index, or the default index when that cannot be
reached. Run for real with a recording stand-in for python/pip, so nothing is installed."""

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]

FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >> "$SETUP_LOG"
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && ln -sf "$0" "$3/bin/python"; fi
if [ "$1" = "-c" ] && [[ "$2" == *urllib* ]]; then exec "$REAL_PYTHON" "$@"; fi
exit 0
"""


@pytest.fixture(scope="module")
def cpu_index(tmp_path_factory):
    """A reachable stand-in for PyTorch's CPU wheel index (loopback only)."""
    root = tmp_path_factory.mktemp("index")
    (root / "cpu" / "torch").mkdir(parents=True)
    (root / "cpu" / "torch" / "index.html").write_text("<a>torch-2.13.0+cpu</a>")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(root))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/cpu"
    server.shutdown()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/cpu"


def run_setup(tmp_path: Path, index_url: str, nvidia_smi: int | None, release: str = "0.19.0",
              min_free_gb: int = 0, expect_rc: int = 0):
    """setup_env.sh with a fake interpreter; nvidia_smi: its exit code, None = not installed;
    release "" = the script's default; min_free_gb: the free space it asks for (0: any disk)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python3"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    if nvidia_smi is not None:
        (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\nexit {nvidia_smi}\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PYTHON": str(python),
        "REAL_PYTHON": sys.executable,
        "SETUP_LOG": str(tmp_path / "calls.log"),
        "TORCH_CPU_INDEX": index_url,
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "AXOLOTL_IPO_SETUP_MIN_FREE_GB": str(min_free_gb),
    }
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup_env.sh"), release, str(tmp_path / "venv")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == expect_rc, done.stdout + done.stderr
    if expect_rc:
        return done
    calls = (tmp_path / "calls.log").read_text().splitlines()
    torch_calls = [c for c in calls if "torch==2.13.0" in c]
    assert len(torch_calls) == 1, calls
    return torch_calls[0], done.stderr


def test_the_default_release_is_the_oldest_supported_one(tmp_path, cpu_index):
    from axolotl_ipo.upstream.axolotl import supported_releases

    run_setup(tmp_path, cpu_index, nvidia_smi=9, release="")
    calls = (tmp_path / "calls.log").read_text()
    assert f"axolotl=={supported_releases()[0]}" in calls, calls
    assert not [r for r in supported_releases()[1:] if f"axolotl=={r}" in calls], calls


def test_no_gpu_installs_torch_from_the_cpu_index(tmp_path, cpu_index):
    call, said = run_setup(tmp_path, cpu_index, nvidia_smi=9)
    assert call.endswith(f"pip install -q --index-url {cpu_index} torch==2.13.0")
    assert f"no NVIDIA GPU: torch from PyTorch's CPU wheel index {cpu_index}" in said


def test_no_nvidia_smi_at_all_counts_as_no_gpu(tmp_path, cpu_index):
    if shutil.which("nvidia-smi", path="/usr/bin:/bin"):
        pytest.skip("this machine has nvidia-smi in /usr/bin")
    call, _ = run_setup(tmp_path, cpu_index, nvidia_smi=None)
    assert f"--index-url {cpu_index} torch==2.13.0" in call


def test_unreachable_cpu_index_falls_back_to_the_default_index(tmp_path):
    unreachable = closed_port_url()
    call, said = run_setup(tmp_path, unreachable, nvidia_smi=9)
    assert call.endswith("pip install -q torch==2.13.0") and "--index-url" not in call
    assert f"{unreachable} cannot be reached: torch from the default index" in said


def test_gpu_machine_keeps_the_default_cuda_build(tmp_path, cpu_index):
    call, said = run_setup(tmp_path, cpu_index, nvidia_smi=0)
    assert call.endswith("pip install -q torch==2.13.0") and "--index-url" not in call
    assert "NVIDIA GPU found: torch from the default index (CUDA build)" in said


def test_too_little_disk_is_refused_in_one_line_before_anything_is_installed(tmp_path, cpu_index):
    done = run_setup(tmp_path, cpu_index, nvidia_smi=9, min_free_gb=10**6, expect_rc=1)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "GB free on" in lines[0] and "needs about 1000000 GB" in lines[0], lines[0]
    assert "free some space, or pass another VENV_DIR" in lines[0]
    assert not (tmp_path / "calls.log").exists()  # no venv created, nothing installed
    assert not (tmp_path / "venv").exists()
