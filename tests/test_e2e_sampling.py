"""SFT data -> sampled pairs -> IPO, through the real Axolotl CLI and `axolotl-ipo sample`."""

import json
import sys
from pathlib import Path

import pytest

from helpers import (
    axolotl,
    axolotl_ipo,
    read_jsonl,
    read_metrics,
    run,
    sft_config,
    write_config,
)

pytestmark = pytest.mark.e2e


def test_preprocess_samples_and_train_reuses_the_pairs(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path, sft_config(tiny_model_dir, tmp_path))
    code, log = run(axolotl("preprocess", cfg), tmp_path)
    assert code == 0, log[-3000:]
    assert "rows in                         9" in log and "pairs out                       8" in log
    assert "invalid: missing_field          1" in log
    assert "row 6, field 'output': missing" in log  # the bad row is named, not silently lost
    assert "batches (sampled now / all)     3 / 3" in log

    code, log = run(axolotl("train", cfg), tmp_path)
    assert code == 0, log[-3000:]
    assert "batches (sampled now / all)     0 / 3" in log and "hit: nothing sampled" in log
    begin, steps = read_metrics(tmp_path / "out")
    assert begin["loss_type"] == ["ipo"]
    assert steps[0]["loss"] == pytest.approx(25.0, abs=1e-3)

    pairs_files = list((tmp_path / "prepared" / "ipo_pairs").glob("*/pairs.jsonl"))
    assert len(pairs_files) == 1
    pairs = read_jsonl(pairs_files[0])
    assert len(pairs) == 8
    first = pairs[0]
    assert first["prompt"] == (
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert first["chosen"] == "Paris.<|im_end|>" and first["rejected"].endswith("<|im_end|>")
    assert first["source"].startswith("datasets[0]") and first["row"] == 0


def test_one_and_two_ranks_sample_identical_pairs(tiny_model_dir, tmp_path):
    """num_samples: 3 with a user's check: the first sample judged wrong is the rejected one,
    and 1 and 2 ranks write the same bytes."""
    sampling = {"max_new_tokens": 12, "batch_size": 3, "temperature": 1.0, "num_samples": 3,
                "answer_check": "user_checks:coin"}
    cfg = write_config(tmp_path, sft_config(tiny_model_dir, tmp_path, rejection_sampling=sampling))
    calls_log = tmp_path / "check_calls.jsonl"
    code, log = run(axolotl_ipo("sample", str(cfg), "--output", str(tmp_path / "one")), tmp_path,
                    extra_env={"CHECK_LOG": str(calls_log)})
    assert code == 0, log[-3000:]
    pair_lines = [line for line in log.splitlines() if line.startswith("pairs: ")]
    assert len(pair_lines) == 1, log[-3000:]  # the store's file, once; then the copy
    assert f"copied to {tmp_path / 'one' / 'pairs.jsonl'}" in log
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "axolotl_ipo.cli", "sample", str(cfg), "--output", str(tmp_path / "two")]
    code, log = run(argv, tmp_path)
    assert code == 0, log[-3000:]
    assert "batches (sampled now / all)     3 / 3" in log  # both ranks' batches, not rank 0's
    one = (tmp_path / "one" / "pairs.jsonl").read_bytes()
    two = (tmp_path / "two" / "pairs.jsonl").read_bytes()
    assert one == two

    calls = read_jsonl(calls_log)  # every judgement, in order, of the one-rank run
    pairs = read_jsonl(tmp_path / "one" / "pairs.jsonl")
    for pair in pairs:
        judged = [c for c in calls if c["question"] in pair["prompt"]]
        first = pair["rejected_sample"]
        assert len(judged) == pair["samples"] and pair["samples"] <= 3
        assert pair["rejected"] == judged[first]["sample"] + "<|im_end|>"
        assert not judged[first]["right"] and all(c["right"] for c in judged[:first])
    assert any(pair["rejected_sample"] > 0 for pair in pairs)
    right = sum(c["right"] for c in calls)
    verdicts = {}
    for c in calls:
        verdicts.setdefault(c["question"], []).append(c["right"])
    solved = sum(all(v) for v in verdicts.values())
    assert 0 < solved < 8 and len(verdicts) == 8
    summary = json.loads(next((tmp_path / "one").glob("*/summary.json")).read_text())
    assert (summary["samples_right"], summary["already_solved"]) == (right, solved)

    code, log = run(axolotl_ipo("inspect", str(tmp_path / "one" / "pairs.jsonl")), tmp_path)
    assert code == 0 and f"{len(pairs)} pairs from 1 source(s)" in log


def preprocess(tiny_model_dir, work: Path, **sampling) -> tuple[int, str]:
    work.mkdir()
    rejection = {"max_new_tokens": 12, "batch_size": 3, **sampling}
    cfg = write_config(work, sft_config(tiny_model_dir, work, rejection_sampling=rejection))
    return run(axolotl("preprocess", cfg), work)


def triples(work: Path) -> list[tuple]:
    (path,) = (work / "prepared" / "ipo_pairs").glob("*/pairs.jsonl")
    return [(p["prompt"], p["chosen"], p["rejected"]) for p in read_jsonl(path)]


def test_a_check_calling_every_sample_right_leaves_no_pairs(tiny_model_dir, tmp_path):
    work = tmp_path / "all"
    code, log = preprocess(tiny_model_dir, work, answer_check="user_checks:always_right")
    assert code != 0 and "Traceback" not in log
    (line,) = [x for x in log.splitlines() if "no pairs left" in x]
    assert line.startswith("axolotl-ipo: error: no pairs left to train on: rejection_sampling."
                           "answer_check 'user_checks:always_right' judged 8 of 8 samples right; "
                           "8 prompts already solved, 0 check errors")


def test_a_check_calling_no_sample_right_gives_todays_pairs(tiny_model_dir, tmp_path):
    code, log = preprocess(tiny_model_dir, tmp_path / "default")
    assert code == 0, log[-3000:]
    never = tmp_path / "never"
    code, log = preprocess(tiny_model_dir, never, answer_check="user_checks:never_right")
    assert code == 0, log[-3000:]
    assert triples(tmp_path / "never") == triples(tmp_path / "default")
    assert len(triples(tmp_path / "default")) == 8


def test_a_check_that_raises_on_a_row_is_reported_and_counted(tiny_model_dir, tmp_path):
    cfg = sft_config(tiny_model_dir, tmp_path, rejection_sampling={
        "max_new_tokens": 12, "batch_size": 3, "answer_check": "user_checks:fails_on_hamlet"})
    code, log = run(axolotl_ipo("sample", str(write_config(tmp_path, cfg))), tmp_path)
    assert code == 0, log[-3000:]
    assert len([x for x in log.splitlines() if x.startswith("pairs: ")]) == 1, log[-3000:]
    assert "raised on 1 row(s), skipped and counted" in log
    assert "sft.jsonl', row 2: ValueError: cannot judge this one" in log
    assert "check errors                    1" in log and "pairs out                       7" in log


def test_an_unknown_check_is_one_line_before_anything_loads(tiny_model_dir, tmp_path):
    code, log = preprocess(tiny_model_dir, tmp_path / "bad", answer_check="nosuch")
    assert code != 0 and "Traceback" not in log
    (line,) = [x for x in log.splitlines() if "nosuch" in x]
    assert line.startswith(
        "axolotl-ipo: error: rejection_sampling.answer_check: unknown check 'nosuch'")
