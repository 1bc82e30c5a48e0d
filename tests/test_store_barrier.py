"""The wait between sampling ranks is kept on the pair store's files: a rank far behind never
trips a collective timeout, and rank 0 merges only once every batch is committed."""

import hashlib
import logging
import threading
import time

import pytest

from axolotl_ipo import distributed
from axolotl_ipo.pairs.build import build_pairs
from axolotl_ipo.pairs.sampler import Completion, SamplingSettings
from axolotl_ipo.pairs.store import PairStore
from axolotl_ipo.sft_rows import extract_examples

SETTINGS = SamplingSettings(max_new_tokens=4, temperature=1.0, batch_size=2, seed=5)


class SlowGenerator:
    """Deterministic in (prompt, seed); `delay` seconds per batch."""

    name = "fake:slow"

    def __init__(self, delay: float):
        self.delay = delay

    def generate(self, prompts, settings, seed):
        time.sleep(self.delay)
        return [Completion(f"answer {hashlib.sha256(f'{p}|{seed}'.encode()).hexdigest()[:8]}",
                           3, "stop") for p in prompts]

    def close(self):
        pass


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def examples():
    rows = [{"instruction": f"question {i} " + "word " * (i % 4), "output": f"gold {i}"}
            for i in range(7)]
    return extract_examples(rows, "alpaca", "data.jsonl")[0]


def run_rank(tokenizer, store, rank, world, delay, barrier):
    return build_pairs(examples(), tokenizer, lambda: SlowGenerator(delay), SETTINGS, store,
                       rank=rank, world_size=world, barrier=barrier, progress=False)


def test_ranks_wait_on_the_store_and_match_one_rank(tmp_path, tokenizer):
    single = run_rank(tokenizer, PairStore.open(tmp_path / "one", {"k": 1}), 0, 1, 0.0, None)
    store = PairStore.open(tmp_path / "two", {"k": 1})
    results = {}

    def rank(r, delay):
        barrier = distributed.store_barrier(store, r, 2, poll_s=0.01)
        results[r] = run_rank(tokenizer, store, r, 2, delay, barrier)

    slow = threading.Thread(target=rank, args=(1, 0.4))  # rank 1 far behind rank 0
    slow.start()
    rank(0, 0.0)  # merges only after rank 1's last batch
    slow.join(timeout=30)
    assert store.is_complete() and set(results) == {0, 1}
    assert results[0].path.read_bytes() == single.path.read_bytes()
    assert results[1].summary.pairs_out == results[0].summary.pairs_out == 7


def test_without_the_wait_rank_0_would_merge_too_early(tmp_path, tokenizer):
    store = PairStore.open(tmp_path / "two", {"k": 1})
    with pytest.raises(RuntimeError, match="did every rank finish sampling"):
        run_rank(tokenizer, store, 0, 2, 0.0, lambda: None)


def test_one_rank_never_waits(tmp_path):
    store = PairStore(tmp_path, "k")  # nothing committed, no plan: a wait would never end
    distributed.store_barrier(store, 0, 1)()


def test_a_long_wait_is_reported(tmp_path, caplog):
    store = PairStore.open(tmp_path, {"k": 1})
    wait = distributed.store_barrier(store, 1, 2, poll_s=0.01, report_s=0.0)
    threading.Timer(0.1, lambda: (store.pairs_path.write_text(""),
                                  store.complete_path.write_text("k\n"))).start()
    with caplog.at_level(logging.INFO, logger="axolotl_ipo"):
        wait()
    assert "rank 1: waiting" in caplog.text and "for rank 0's merge" in caplog.text


def test_rank_0_waits_for_every_ranks_counts(tmp_path, tokenizer, monkeypatch):
    """Rank 1's batches are all committed but its counts are written late: rank 0's summary
    still counts the whole run (CI once saw '2 / 4' batches here)."""
    store = PairStore.open(tmp_path / "two", {"k": 1})
    record = store.record_rank_counts

    def late(rank, counts):
        if rank == 1:
            time.sleep(0.5)
        record(rank, counts)

    monkeypatch.setattr(store, "record_rank_counts", late)
    results = {}

    def rank(r):
        barrier = distributed.store_barrier(store, r, 2, poll_s=0.01)
        results[r] = run_rank(tokenizer, store, r, 2, 0.0, barrier)

    other = threading.Thread(target=rank, args=(1,))
    other.start()
    rank(0)
    other.join(timeout=30)
    assert results[0].summary.batches_sampled == 4 == results[0].summary.batches


def wait_in_thread(wait):
    """Run a barrier wait in a thread: (thread, what it raised, if anything)."""
    raised = []

    def target():
        try:
            wait()
        except Exception as err:  # noqa: BLE001 - the test inspects it
            raised.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=10)
    return thread, raised


@pytest.mark.parametrize("rank", [0, 1])
def test_a_store_no_other_rank_writes_to_times_out_naming_it(tmp_path, rank):
    """Node-local disks in a multi-node run: the ranks never see each other's files. The wait
    ends in one line naming the store and saying it must be shared (it used to wait forever)."""
    from axolotl_ipo.errors import UserError

    store = PairStore.open(tmp_path / "store", {"k": 1})
    store.ensure_plan({"batches": 2})
    store.commit_batch(rank, [])  # this rank's own share is done
    store.record_rank_counts(rank, {})
    wait = distributed.store_barrier(store, rank, 2, poll_s=0.01, timeout_s=0.3)
    thread, raised = wait_in_thread(wait)
    assert not thread.is_alive(), "the barrier has no timeout"
    (err,) = raised
    message = str(err)
    assert isinstance(err, UserError) and "\n" not in message
    assert str(store.dir) in message and "shared by all nodes" in message
    assert "copy the complete store to that path on every node" in message
    assert distributed.BARRIER_TIMEOUT_ENV in message


def test_progress_restarts_the_timeout(tmp_path):
    """A slow rank that keeps committing batches is waited for however long it takes."""
    store = PairStore.open(tmp_path / "store", {"k": 1})
    store.ensure_plan({"batches": 5})
    store.record_rank_counts(0, {})

    def other_rank():
        for index in range(5):
            time.sleep(0.15)  # each batch slower than half the timeout, all of them 3x it
            store.commit_batch(index, [])
        store.record_rank_counts(1, {})

    threading.Thread(target=other_rank, daemon=True).start()
    wait = distributed.store_barrier(store, 0, 2, poll_s=0.01, timeout_s=0.25)
    thread, raised = wait_in_thread(wait)
    assert not thread.is_alive() and raised == []
    assert store.missing_batches() == [] and store.missing_rank_counts(2) == []


def test_the_timeout_comes_from_the_environment(monkeypatch):
    from axolotl_ipo.errors import UserError

    monkeypatch.delenv(distributed.BARRIER_TIMEOUT_ENV, raising=False)
    assert distributed.barrier_timeout_s() == distributed.DEFAULT_BARRIER_TIMEOUT_S == 3600
    monkeypatch.setenv(distributed.BARRIER_TIMEOUT_ENV, "90")
    assert distributed.barrier_timeout_s() == 90
    monkeypatch.setenv(distributed.BARRIER_TIMEOUT_ENV, "0")  # no limit
    assert distributed.barrier_timeout_s() == 0
    monkeypatch.setenv(distributed.BARRIER_TIMEOUT_ENV, "soon")
    with pytest.raises(UserError, match=r"AXOLOTL_IPO_BARRIER_TIMEOUT='soon' is not a number"):
        distributed.barrier_timeout_s()
