import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from axolotl_ipo.errors import UserError
from axolotl_ipo.pairs import store as store_mod
from axolotl_ipo.pairs.store import PairStore, atomic_write, cache_key, dumps_row


def test_cache_key_stable_and_sensitive():
    a = cache_key({"b": 1, "a": [1, 2], "path": Path("/m"), "t": (1, 2)})
    b = cache_key({"a": [1, 2], "t": [1, 2], "path": "/m", "b": 1})
    assert a == b and re.fullmatch("[0-9a-f]{64}", a)
    assert cache_key({"a": 1}) != cache_key({"a": 2})

    @dataclass(frozen=True)
    class S:
        x: float = 0.7

    assert cache_key({"s": S()}) == cache_key({"s": {"x": 0.7}})
    with pytest.raises(TypeError, match="cache key parts must be JSON data"):
        cache_key({"x": object()})


def test_cache_key_is_the_same_in_another_process():
    """Sets iterate in a per-process hash order: the key must not depend on it."""
    parts = {"stops": {"<|im_end|>", "</s>", "<eos>", "###"}, "t": 0.7}
    code = (
        "from axolotl_ipo.pairs.store import cache_key; "
        "print(cache_key({'stops': {'<|im_end|>', '</s>', '<eos>', '###'}, 't': 0.7}))"
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert keys == {cache_key(parts)}


def test_open_writes_meta(tmp_path):
    st = PairStore.open(tmp_path, {"model": "m", "n": 1})
    meta = json.loads(st.meta_path.read_text())
    assert meta == {"key": st.key, "parts": {"model": "m", "n": 1}}
    assert st.dir == tmp_path / st.key and st.shards_dir.is_dir()
    assert st.done_batches() == set() and not st.is_complete()
    with pytest.raises(ValueError):
        PairStore(tmp_path, "../evil")


def test_commit_and_done_batches_ignore_tmp(tmp_path):
    st = PairStore.open(tmp_path, {"k": 1})
    st.commit_batch(3, [{"a": 1}])
    st.commit_batch(0, [{"a": "é"}])
    (st.shards_dir / ".batch-000001.jsonl.abc.tmp").write_text("partial")
    assert st.done_batches() == {0, 3}
    assert st.read_batch(0) == [{"a": "é"}]
    assert st.shard_path(0).read_text(encoding="utf-8") == '{"a": "é"}\n'


def test_atomic_write_failure_leaves_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    atomic_write(target, "old")

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(store_mod.os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_merge_orders_filters_and_completes(tmp_path):
    st = PairStore.open(tmp_path, {"k": 2})
    st.commit_batch(1, [{"index": 0, "source": "a", "row": 0, "x": "r0"}])
    st.commit_batch(
        0,
        [
            {"index": 2, "source": "a", "row": 5, "x": "r2"},
            {"index": 1, "source": "a", "row": 3, "x": "r1", "drop_reason": "empty_rejected"},
        ],
    )
    with pytest.raises(RuntimeError, match=r"1 of 3 batches are not committed \(2\)"):
        st.merge(3)
    assert not st.is_complete()
    stats = st.merge(
        2,
        summary=lambda s, rows: {"pairs": s.kept, "all": len(rows)},
        invalid=[{"row": 9, "reason": "bad"}],
    )
    assert (stats.rows, stats.kept, stats.dropped) == (3, 2, {"empty_rejected": 1})
    assert st.is_complete()
    assert [r["x"] for r in st.read_pairs()] == ["r0", "r2"]
    assert all("drop_reason" not in r for r in st.read_pairs())
    assert st.read_summary() == {"pairs": 2, "all": 3}
    assert st.invalid_path.read_text() == dumps_row({"row": 9, "reason": "bad"}) + "\n"
    assert st.complete_path.read_text() == st.key + "\n"


def test_merge_default_order_source_row(tmp_path):
    st = PairStore.open(tmp_path, {"k": 3})
    st.commit_batch(0, [{"source": "b", "row": 0}, {"source": "a", "row": 2}])
    st.commit_batch(1, [{"source": "a", "row": 1}])
    st.merge(2)
    assert [(r["source"], r["row"]) for r in st.read_pairs()] == [("a", 1), ("a", 2), ("b", 0)]


def test_find_returns_only_a_complete_store_and_creates_nothing(tmp_path):
    assert PairStore.find(tmp_path / "none", {"k": 4}) is None
    assert not (tmp_path / "none").exists()
    st = PairStore.open(tmp_path, {"k": 4})
    st.commit_batch(0, [{"source": "a", "row": 0}])
    assert PairStore.find(tmp_path, {"k": 4}) is None  # committed, not merged
    st.merge(1)
    found = PairStore.find(tmp_path, {"k": 4})
    assert found is not None and found.dir == st.dir and found.read_pairs() == st.read_pairs()
    assert PairStore.find(tmp_path, {"k": 5}) is None


def test_merge_removes_stale_tmp(tmp_path):
    st = PairStore.open(tmp_path, {"k": 4})
    st.commit_batch(0, [{"row": 0}])
    stale = st.shards_dir / ".batch-000001.jsonl.x.tmp"
    stale.write_text("half")
    st.merge(1)
    assert not stale.exists()


def test_ensure_plan(tmp_path):
    st = PairStore.open(tmp_path, {"k": 5})
    st.ensure_plan({"batches": 3, "digest": "abc"})
    st.ensure_plan({"digest": "abc", "batches": 3})
    with pytest.raises(RuntimeError, match="different batch plan"):
        st.ensure_plan({"batches": 4, "digest": "abd"})


def test_dumps_row_deterministic():
    assert dumps_row({"b": 1, "a": "ü"}) == '{"a": "ü", "b": 1}'
    assert os.linesep not in dumps_row({"a": "x\ny"})


def test_a_complete_store_is_reused_without_writing(tmp_path, monkeypatch):
    """A finished store copied read-only (or on a read-only mount) is read, never written."""
    parts = {"k": "read-only"}
    store = PairStore.open(tmp_path, parts)
    store.commit_batch(0, [{"index": 0}])
    store.merge(1, summary={"rows_in": 1})

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store_mod, "_atomic_write", refuse)
    monkeypatch.setattr(store_mod, "_flock", refuse)
    monkeypatch.setattr(Path, "mkdir", refuse)
    monkeypatch.setattr(Path, "unlink", refuse)
    again = PairStore.open(tmp_path, parts)
    assert again.is_complete() and again.read_pairs() == [{"index": 0}]


def test_an_unwritable_lock_is_one_line_with_the_fix(tmp_path, monkeypatch):
    store = PairStore.open(tmp_path, {"k": "lock"})
    real_open = open

    def no_lock(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_lock)
    with pytest.raises(UserError) as err:
        store.ensure_plan({"batches": 1})
    assert str(err.value).startswith(f"cannot write {store.locks_dir / 'store.lock'}: Permission")
    assert "choose a writable directory" in str(err.value)
