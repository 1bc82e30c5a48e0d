"""Several processes on one pair store: no batch is sampled twice, each reuses the other's
batches, both end with the same pairs; store files get one file mode."""

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from axolotl_ipo.pairs.store import PairStore

REPO = Path(__file__).resolve().parents[1]

SAMPLER = textwrap.dedent(
    """
    import hashlib, json, os, sys, time
    from transformers import AutoTokenizer
    from axolotl_ipo.pairs.build import build_pairs
    from axolotl_ipo.pairs.sampler import Completion, SamplingSettings
    from axolotl_ipo.sft_rows import extract_examples
    from axolotl_ipo.pairs.store import PairStore

    model_dir, root, seeds_log = sys.argv[1:4]

    class Slow:
        name = "fake:slow"

        def generate(self, prompts, settings, seed):
            with open(seeds_log, "a") as log:
                log.write(f"{seed}\\n")
            time.sleep(0.3)
            return [Completion("sampled " + hashlib.sha256(f"{p}|{seed}".encode()).hexdigest()[:8],
                               4, "length") for p in prompts]

    rows = [{"instruction": f"question {i}", "output": f"gold {i}"} for i in range(16)]
    examples, _ = extract_examples(rows, "alpaca", "data.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    print("ready", flush=True)
    while not os.path.exists(root + ".go"):  # both start sampling together
        time.sleep(0.01)
    result = build_pairs(examples, tokenizer, Slow,
                         SamplingSettings(batch_size=2), PairStore.open(root, {"t": "shared"}),
                         progress=False)
    print(json.dumps({"sampled": result.summary.batches_sampled,
                      "tokens": result.summary.tokens_this_run}))
    """
)


def run_samplers(tmp_path: Path, model_dir: Path, root: Path, names: list[str]) -> dict:
    script = tmp_path / "sampler.py"
    script.write_text(SAMPLER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(script), str(model_dir), str(root), str(tmp_path / name)],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name in names
    }
    for proc in procs.values():
        assert proc.stdout.readline().strip() == "ready"
    Path(f"{root}.go").touch()
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        seeds = (tmp_path / name).read_text().split() if (tmp_path / name).exists() else []
        summary = json.loads(out.splitlines()[-1])
        assert summary["tokens"] == 8 * summary["sampled"]  # its own tokens, 2 rows x 4 a batch
        results[name] = (summary["sampled"], seeds)
    return results


def test_two_runs_on_one_store_share_the_work(tmp_path, tiny_model_dir):
    ref = run_samplers(tmp_path, tiny_model_dir, tmp_path / "ref", ["alone"])
    assert ref["alone"][0] == 8
    both = run_samplers(tmp_path, tiny_model_dir, tmp_path / "shared", ["first", "second"])
    (first, first_seeds), (second, second_seeds) = both["first"], both["second"]
    assert first + second == 8 and len(first_seeds) + len(second_seeds) == 8
    # each process reports what it sampled itself, not the other's (or the last merger's) counts
    assert (first, second) == (len(first_seeds), len(second_seeds))
    assert not set(first_seeds) & set(second_seeds)  # no batch sampled twice
    assert set(first_seeds) | set(second_seeds) == set(ref["alone"][1])
    (ref_pairs,) = (tmp_path / "ref").glob("*/pairs.jsonl")
    (shared_pairs,) = (tmp_path / "shared").glob("*/pairs.jsonl")
    assert shared_pairs.read_bytes() == ref_pairs.read_bytes()


HOLDER = textwrap.dedent(
    """
    import fcntl, pathlib, sys, time
    lock = open(sys.argv[1], "ab")
    fcntl.flock(lock, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(1.0)
    if sys.argv[2] != "-":
        pathlib.Path(sys.argv[2]).write_text('{"a": 1}\\n')
    """
)


def claimed_while_another_holds_batch_1(store: PairStore, commits: bool) -> list[int]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store.locks_dir / "batch-000001.lock"),
         str(store.shard_path(1)) if commits else "-"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    claimed = []
    started = time.monotonic()
    for index in store.claim([0, 1, 2]):
        claimed.append(index)
        store.commit_batch(index, [{"index": index}])
    assert holder.wait() == 0 and time.monotonic() - started > 0.5  # it waited for batch 1
    return claimed


def test_a_batch_another_process_samples_is_waited_for_and_reused(tmp_path):
    store = PairStore.open(tmp_path, {"k": "claim"})
    assert claimed_while_another_holds_batch_1(store, commits=True) == [0, 2]
    assert store.done_batches() == {0, 1, 2}


def test_a_batch_whose_sampler_died_is_sampled_here(tmp_path):
    store = PairStore.open(tmp_path, {"k": "claim"})
    assert claimed_while_another_holds_batch_1(store, commits=False) == [0, 2, 1]


def test_merge_spares_a_shard_another_process_is_writing(tmp_path):
    store = PairStore.open(tmp_path, {"k": "tmp"})
    store.commit_batch(0, [{"index": 0}])
    in_flight = store.shards_dir / ".batch-000003.jsonl.abc.tmp"
    stale = store.shards_dir / ".batch-000004.jsonl.def.tmp"
    in_flight.write_text("partial")
    stale.write_text("left by a killed writer")
    with store._batch_lock(3, wait=True):  # as another process sampling batch 3 would
        store.merge(1)
    assert in_flight.exists() and not stale.exists()


def test_store_files_get_the_same_mode_as_other_files(tmp_path):
    old = os.umask(0o022)
    try:
        store = PairStore.open(tmp_path, {"k": "mode"})
        store.commit_batch(0, [{"index": 0}])
        store.merge(1)
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert expected == 0o644
    for path in (store.pairs_path, store.shard_path(0), store.meta_path, store.summary_path):
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_store_writes_leave_the_process_umask_alone(tmp_path, monkeypatch):
    """Setting the umask is process-wide: a thread creating a file meanwhile would get 0666."""
    calls = []
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or 0o022)
    store = PairStore.open(tmp_path, {"k": "umask"})
    store.commit_batch(0, [{"index": 0}])
    store.merge(1)
    assert calls == []
