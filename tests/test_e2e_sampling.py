"""SFT data -> sampled pairs -> IPO, through the real Axolotl CLI and `axolotl-ipo sample`."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from axolotl_run import read_metrics, run, sft_config, write_config

pytestmark = pytest.mark.e2e


def cli(*args: str) -> list[str]:
    return [shutil.which("axolotl-ipo", path=str(Path(sys.executable).parent)), *args]


def test_preprocess_samples_and_train_reuses_the_pairs(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path, sft_config(tiny_model_dir, tmp_path))
    code, log = run([sys.executable, "-m", "axolotl.cli.preprocess", str(cfg)], tmp_path)
    assert code == 0, log[-3000:]
    assert "rows in                         9" in log and "pairs out                       8" in log
    assert "invalid: missing_field          1" in log
    assert "row 6, field 'output': missing" in log  # the bad row is named, not silently lost
    assert "batches (sampled now / all)     3 / 3" in log

    code, log = run([sys.executable, "-m", "axolotl.cli.train", str(cfg)], tmp_path)
    assert code == 0, log[-3000:]
    assert "batches (sampled now / all)     0 / 3" in log and "hit: nothing sampled" in log
    begin, steps = read_metrics(tmp_path / "out")
    assert begin["loss_type"] == ["ipo"]
    assert steps[0]["loss"] == pytest.approx(25.0, abs=1e-3)

    pairs_files = list((tmp_path / "prepared" / "ipo_pairs").glob("*/pairs.jsonl"))
    assert len(pairs_files) == 1
    pairs = [json.loads(line) for line in pairs_files[0].read_text().splitlines()]
    assert len(pairs) == 8
    first = pairs[0]
    assert first["prompt"] == (
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert first["chosen"] == "Paris.<|im_end|>" and first["rejected"].endswith("<|im_end|>")
    assert first["source"].startswith("datasets[0]") and first["row"] == 0


def test_one_and_two_ranks_sample_identical_pairs(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path, sft_config(tiny_model_dir, tmp_path))
    code, log = run(cli("sample", str(cfg), "--output", str(tmp_path / "one")), tmp_path)
    assert code == 0, log[-3000:]
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "-m", "axolotl_ipo.cli", "sample", str(cfg), "--output", str(tmp_path / "two")]
    code, log = run(argv, tmp_path)
    assert code == 0, log[-3000:]
    assert "batches (sampled now / all)     3 / 3" in log  # both ranks' batches, not rank 0's
    one = (tmp_path / "one" / "pairs.jsonl").read_bytes()
    two = (tmp_path / "two" / "pairs.jsonl").read_bytes()
    assert one == two and len(one.splitlines()) == 8

    code, log = run(cli("inspect", str(tmp_path / "one" / "pairs.jsonl")), tmp_path)
    assert code == 0 and "8 pairs from 1 source(s)" in log and "identical chosen/rejected" in log
