"""benchmarks/overhead.py: the step split and the profile comparison behind its ratios."""

from __future__ import annotations

import pytest

from helpers import load_script

overhead = load_script("benchmarks/overhead.py")


def marks(*steps):
    """Step marks for (begin, end) times."""
    return [mark for begin, end in steps for mark in (("begin", begin), ("end", end))]


def test_step_split_leaves_out_the_warm_up_steps_and_takes_medians():
    # steps: two slow warm-up steps, then 1.0, 1.2, 1.1 s inside with gaps 0.1 and 0.3
    steps = marks((0.0, 5.0), (5.5, 9.0), (10.0, 11.0), (11.1, 12.3), (12.6, 13.7))
    inside, between = overhead.step_split(steps)
    assert inside == pytest.approx(1.1)
    assert between == pytest.approx(0.2)


def test_step_split_refuses_too_few_steps():
    with pytest.raises(ValueError, match="need 4 or more whole steps"):
        overhead.step_split(marks((0, 1), (2, 3), (4, 5)))


def test_profile_diff_lists_the_largest_time_differences_then_count_or_flop_changes():
    plain = {"aten::mm": [10, 1000.0, 500], "aten::add": [5, 100.0, 0],
             "aten::mul": [3, 50.0, 0], "aten::exp": [2, 20.0, 0]}
    plugin = {"aten::mm": [10, 1300.0, 500], "aten::add": [5, 90.0, 0],
              "aten::mul": [4, 50.0, 0], "aten::cat": [1, 5.0, 0], "aten::exp": [2, 20.0, 8]}
    rows = overhead.profile_diff(plain, plugin, rows=1)
    assert rows[0] == ("aten::mm", 10, 10, 1.0, 1.3, True)
    later = {row[0]: row for row in rows[1:]}
    assert set(later) == {"aten::mul", "aten::cat", "aten::exp"}  # add: same calls and FLOPs
    assert later["aten::cat"][1:3] == (0, 1)
    assert later["aten::exp"][5] is False


def test_pairs_alternate_which_variant_runs_first():
    assert [overhead.pair_order(i) for i in range(3)] == [
        ("plain", "plugin"), ("plugin", "plain"), ("plain", "plugin")]
