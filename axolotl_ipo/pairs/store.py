"""The pair store: one directory per cache key, one file per finished batch.

Layout::

    <root>/<key>/meta.json                 key parts, for humans
    <root>/<key>/plan.json                 batch plan digest (guards resumes)
    <root>/<key>/shards/batch-000123.jsonl one committed batch (written atomically)
    <root>/<key>/pairs.jsonl               merged pairs, dataset order
    <root>/<key>/invalid.jsonl             rows that were not used, with reasons
    <root>/<key>/summary.json              run summary
    <root>/<key>/COMPLETE                  written last: the store is complete
    <root>/<key>/ranks/rank-00000.json     what each rank sampled in the last run (summary)
    <root>/<key>/locks/                    flock files: one per batch being sampled, one for
                                           meta/plan/merge (released when a process dies)

Every file is written to a temporary file in the same directory, flushed, fsynced and
renamed over the target, so a ``kill -9`` at any moment loses at most the batch in
flight. Several processes may share a store (the ranks of one job, or two runs of the same
config): a batch is sampled by whoever holds its lock, the others skip it or wait for it and
reuse it. Files get the mode a plain ``open`` would give (0666 less the umask), and a complete
store is read without writing anything (it may be read-only). Shard rows
carrying a truthy ``drop_reason`` are kept in the shard (so resumed runs can count them) but
left out of ``pairs.jsonl``. Nothing here knows about models.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axolotl_ipo.errors import UserError

logger = logging.getLogger("axolotl_ipo.pairs.store")

__all__ = ["PairStore", "MergeStats", "StoreWriteError", "cache_key", "dumps_row", "atomic_write"]

_SHARD = re.compile(r"^batch-(\d{6,})\.jsonl$")


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(
        f"cache key parts must be JSON data (str, numbers, lists, dicts, dataclasses, paths); "
        f"got {type(value).__name__}: {value!r}"
    )


def _stable_json(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_json_default
    )


def cache_key(parts: Mapping[str, Any]) -> str:
    """sha256 hex digest of a stable JSON dump of ``parts``."""
    return hashlib.sha256(_stable_json(dict(parts)).encode("utf-8")).hexdigest()


def dumps_row(row: Mapping[str, Any]) -> str:
    """Deterministic one-line JSON for a row (identical bytes for identical rows)."""
    return json.dumps(row, ensure_ascii=False, sort_keys=True)


class StoreWriteError(UserError, OSError):
    """The disk refused a write (full, read-only, not a directory): said with the path."""


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        raise StoreWriteError(
            f"cannot write {path}: {err.strerror or err}. Free disk space or choose a writable "
            "directory (rejection_sampling.output_dir, or --output of axolotl-ipo sample); "
            "batches already committed stay there and the next run resumes from them."
        ) from err


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` atomically (tmp file in the same dir, fsync, rename)."""
    path = Path(path)
    with _writing(path):
        return _atomic_write(path, data.encode("utf-8") if isinstance(data, str) else data)


@contextmanager
def _flock(path: Path, wait: bool) -> Iterator[bool]:
    """An exclusive lock on ``path``; yields False instead of waiting when ``wait`` is False.
    The kernel drops it when the process dies, so a killed run never leaves a stale lock."""
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "ab")  # noqa: SIM115 - closed below, after the lock is released
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _create_tmp(path: Path) -> tuple[int, Path]:
    """A new temporary file beside ``path``, created with mode 0666 so that the kernel applies
    the umask, as for a file `open(path, "w")` creates (mkstemp's 0600 would differ, and setting
    the umask to learn it would change it for every thread of the process meanwhile)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _atomic_write(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_tmp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable; not possible on every platform
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def _jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    return "".join(dumps_row(row) + "\n" for row in rows)


@dataclass(frozen=True)
class MergeStats:
    """What :meth:`PairStore.merge` wrote."""

    rows: int
    kept: int
    dropped: dict[str, int]


def _dataset_order(row: Mapping[str, Any]) -> tuple:
    return (row.get("index", 0), str(row.get("source", "")), row.get("row", 0))


class PairStore:
    """A directory of committed batches for one cache key."""

    def __init__(self, root: str | os.PathLike, key: str) -> None:
        if not re.fullmatch(r"[0-9A-Za-z_.-]+", key):
            raise ValueError(f"invalid cache key {key!r}")
        self.root = Path(root)
        self.key = key
        self.dir = self.root / key
        self.shards_dir = self.dir / "shards"
        self.pairs_path = self.dir / "pairs.jsonl"
        self.invalid_path = self.dir / "invalid.jsonl"
        self.summary_path = self.dir / "summary.json"
        self.meta_path = self.dir / "meta.json"
        self.complete_path = self.dir / "COMPLETE"
        self.locks_dir = self.dir / "locks"

    @classmethod
    def open(cls, root: str | os.PathLike, parts: Mapping[str, Any]) -> PairStore:
        """The store for ``cache_key(parts)``; writes ``meta.json`` with the parts unless the
        store is complete."""
        store = cls(root, cache_key(parts))
        if store.is_complete():  # reading needs no write: a read-only copy is reused as it is
            return store
        with _writing(store.shards_dir):
            store.shards_dir.mkdir(parents=True, exist_ok=True)
            store.locks_dir.mkdir(exist_ok=True)
        with store._store_lock():
            if not store.meta_path.exists():
                meta = {"key": store.key, "parts": json.loads(_stable_json(dict(parts)))}
                atomic_write(store.meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return store

    @classmethod
    def find(cls, root: str | os.PathLike, parts: Mapping[str, Any]) -> PairStore | None:
        """The complete store for ``cache_key(parts)``, or None; creates nothing."""
        store = cls(root, cache_key(parts))
        return store if store.is_complete() else None

    def __repr__(self) -> str:
        return f"PairStore({str(self.dir)!r})"

    # -- batches ---------------------------------------------------------------------------
    def shard_path(self, index: int) -> Path:
        return self.shards_dir / f"batch-{index:06d}.jsonl"

    def done_batches(self) -> set[int]:
        """Indices of committed batches."""
        if not self.shards_dir.is_dir():
            return set()
        found = (_SHARD.match(p.name) for p in self.shards_dir.iterdir())
        return {int(m.group(1)) for m in found if m}

    def commit_batch(self, index: int, rows: Iterable[Mapping[str, Any]]) -> Path:
        """Atomically write one finished batch."""
        if index < 0:
            raise ValueError(f"batch index must be >= 0, got {index}")
        return atomic_write(self.shard_path(index), _jsonl(rows))

    def read_batch(self, index: int) -> list[dict]:
        with open(self.shard_path(index), encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def _store_lock(self) -> Any:
        return _flock(self.locks_dir / "store.lock", wait=True)

    def _batch_lock(self, index: int, wait: bool) -> Any:
        return _flock(self.locks_dir / f"batch-{index:06d}.lock", wait=wait)

    def claim(self, indices: Iterable[int]) -> Iterator[int]:
        """The batches of ``indices`` this process should sample, each yielded while its lock
        is held (sample and commit it before asking for the next). A batch that another
        process is sampling is skipped at first and waited for at the end: reused once that
        process commits it, sampled here if it died first. Committed batches are never
        yielded, so no two processes sample the same batch."""
        deferred = []
        for index in indices:
            with self._batch_lock(index, wait=False) as held:
                if not held:
                    deferred.append(index)
                elif not self.shard_path(index).exists():
                    yield index
        for index in deferred:
            logger.info("batch %d is being sampled by another process; waiting for it", index)
            with self._batch_lock(index, wait=True):
                if not self.shard_path(index).exists():
                    yield index

    def ensure_plan(self, plan: Mapping[str, Any]) -> None:
        """Record the batch plan, or check that it matches the recorded one.

        Committed batches are only valid for the plan they were sampled under; a mismatch
        means the cache key parts miss something that changes the plan."""
        path = self.dir / "plan.json"
        text = json.dumps(dict(plan), indent=2, sort_keys=True, default=_json_default) + "\n"
        with self._store_lock():
            self._check_or_write_plan(path, text)

    def _check_or_write_plan(self, path: Path, text: str) -> None:
        if path.exists():
            recorded = path.read_text(encoding="utf-8")
            if recorded != text:
                raise RuntimeError(
                    f"{self.dir} holds batches from a different batch plan than this run's "
                    "(the data, sequence_len, batch size or chat template changed without "
                    "changing the cache key). Include everything that changes the prompts in "
                    f"the cache key parts, or delete {self.dir} to sample again."
                )
            return
        atomic_write(path, text)

    def record_rank_counts(self, rank: int, counts: Mapping[str, Any]) -> None:
        """What this rank sampled in this run, for rank 0's summary of the whole run."""
        atomic_write(self._rank_path(rank), json.dumps(dict(counts), sort_keys=True) + "\n")

    def clear_rank_counts(self, rank: int) -> None:
        """Forget what this rank recorded in an earlier, interrupted run."""
        self._rank_path(rank).unlink(missing_ok=True)

    def missing_rank_counts(self, world_size: int) -> list[int]:
        """The ranks of ``0..world_size-1`` that have not recorded their counts yet."""
        return [rank for rank in range(world_size) if not self._rank_path(rank).exists()]

    def rank_counts(self, world_size: int) -> list[dict]:
        """The recorded counts of ranks ``0..world_size-1`` (those that recorded any)."""
        paths = [self._rank_path(rank) for rank in range(world_size)]
        return [json.loads(path.read_text(encoding="utf-8")) for path in paths if path.exists()]

    def _rank_path(self, rank: int) -> Path:
        return self.dir / "ranks" / f"rank-{rank:05d}.json"

    # -- merged output ---------------------------------------------------------------------
    def is_complete(self) -> bool:
        return self.complete_path.exists() and self.pairs_path.exists()

    def merge(
        self,
        n_batches: int,
        *,
        summary: Mapping[str, Any]
        | Callable[[MergeStats, list[dict]], Mapping[str, Any]]
        | None = None,
        invalid: Iterable[Mapping[str, Any]] = (),
    ) -> MergeStats:
        """Concatenate batches ``0..n_batches-1`` and write ``pairs.jsonl`` (rows without a
        ``drop_reason``, sorted back into dataset order), ``invalid.jsonl``,
        ``summary.json`` and finally ``COMPLETE``. ``summary`` may be a callable that gets
        the merge statistics and every shard row (dropped ones included)."""
        rows = self._committed_rows(n_batches)
        rows.sort(key=_dataset_order)  # stable: ties keep batch order
        dropped = Counter(str(r["drop_reason"]) for r in rows if r.get("drop_reason"))
        kept = [
            {k: v for k, v in r.items() if k != "drop_reason"}
            for r in rows
            if not r.get("drop_reason")
        ]
        stats = MergeStats(rows=len(rows), kept=len(kept), dropped=dict(sorted(dropped.items())))
        info = summary(stats, rows) if callable(summary) else (summary or {})
        with self._store_lock():  # one merger at a time; nobody writes meta/plan meanwhile
            self.complete_path.unlink(missing_ok=True)
            atomic_write(self.pairs_path, _jsonl(kept))
            atomic_write(self.invalid_path, _jsonl(invalid))
            text = json.dumps(dict(info), indent=2, sort_keys=True, default=str) + "\n"
            atomic_write(self.summary_path, text)
            atomic_write(self.complete_path, self.key + "\n")
            self._remove_stale_tmp()
        return stats

    def missing_batches(self, n_batches: int | None = None) -> list[int]:
        """Planned batches not committed yet (``n_batches`` default: the recorded plan's)."""
        if n_batches is None:
            plan = json.loads((self.dir / "plan.json").read_text(encoding="utf-8"))
            n_batches = int(plan["batches"])
        return sorted(set(range(n_batches)) - self.done_batches())

    def _committed_rows(self, n_batches: int) -> list[dict]:
        missing = self.missing_batches(n_batches)
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise RuntimeError(
                f"cannot merge {self.dir}: {len(missing)} of {n_batches} batches are not "
                f"committed ({shown}); did every rank finish sampling?"
            )
        rows: list[dict] = []
        for index in range(n_batches):
            rows.extend(self.read_batch(index))
        return rows

    def read_pairs(self) -> list[dict]:
        with open(self.pairs_path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def read_summary(self) -> dict | None:
        try:
            with open(self.summary_path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None

    def _remove_stale_tmp(self) -> None:
        """Temporary files left by killed writers (called under the store lock). A shard's
        temporary file is only removed when nobody holds that batch's lock: a process that
        shares the store may be writing it right now."""
        for path in self.dir.glob(".*.tmp"):
            path.unlink(missing_ok=True)
        for path in self.shards_dir.glob(".batch-*.tmp"):
            index = int(path.name.split("-")[1].split(".")[0])
            with self._batch_lock(index, wait=False) as held:
                if held:
                    path.unlink(missing_ok=True)
