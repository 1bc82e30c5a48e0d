"""scripts/prepare_tasks.py: the built addition tasks are right, distinct and split apart."""

from __future__ import annotations

import re

from helpers import load_script

prepare_tasks = load_script("scripts/prepare_tasks.py")


def test_additions_are_distinct_two_digit_sums_with_their_answer():
    rows = prepare_tasks.add()
    assert len(rows) == prepare_tasks.ADDITION_ROWS
    assert len({r["instruction"] for r in rows}) == len(rows)
    for row in rows:
        a, b = map(int, re.fullmatch(r"What is (\d\d) \+ (\d\d)\?", row["instruction"]).groups())
        assert row["output"] == str(a + b) and row["answers"] == [row["output"]]


def test_the_working_is_true_at_every_step_and_ends_on_the_sum():
    plain, steps = prepare_tasks.add(), prepare_tasks.add_steps()
    assert [r["instruction"] for r in steps] == [r["instruction"] for r in plain]
    for row, answer in zip(steps, plain, strict=True):
        parts = row["output"].split(" = ")
        assert parts[-1] == answer["output"] and len(parts) == 4
        assert len({sum(map(int, p.split(" + "))) for p in parts}) == 1
    assert steps[0]["output"].startswith(steps[0]["instruction"][8:-1] + " = ")


def test_the_split_never_shares_a_row():
    train, heldout = prepare_tasks.split(prepare_tasks.add(), 256, 200)
    assert len(train) == 256 and len(heldout) == 200
    assert not {r["instruction"] for r in train} & {r["instruction"] for r in heldout}
