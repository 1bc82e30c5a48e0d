"""research/training_order/training_order.py through Axolotl's own dataset loading and trainer setup
on the tiny model: the training order is a function of the rows and the seed (the reason the study's
SFT restarts are reseeded), not of the run's folders."""

import json

import pytest
import yaml

from helpers import load_script

training_order = load_script("research/training_order/training_order.py")
skill_study = load_script("research/skill_study/skill_study.py")


def test_compare_counts_shared_rows_and_order():
    got = training_order.compare({"a": ["x", "y", "z"], "b": ["x", "y", "z"], "c": ["z", "w", "w"]})
    assert got["a"] == {"rows": 3, "distinct": 3, "shared_with_first": 3,
                        "same_order_as_first": True}
    assert got["b"]["same_order_as_first"]
    assert got["c"] == {"rows": 3, "distinct": 2, "shared_with_first": 1,
                        "same_order_as_first": False}
    assert got["union_distinct"] == 4


@pytest.mark.e2e
def test_same_seed_same_rows_in_the_same_order(tiny_model_dir, tmp_path, capsys):
    from test_skill_study import ROWS

    from helpers import write_jsonl

    study = skill_study.Study(write_jsonl(tmp_path / "train.jsonl", ROWS),
                              write_jsonl(tmp_path / "heldout.jsonl", ROWS[:2]), "number",
                              tmp_path / "work", str(tiny_model_dir), sequence_len=128)
    rows = skill_study.messages_file(study)
    configs = []
    for name, seed in (("a", 42), ("b", 42), ("c", 43)):
        run = tmp_path / name
        run.mkdir()
        cfg = skill_study.sft_config(skill_study.dataclasses.replace(study, seed=seed), run,
                                     rows, str(tiny_model_dir))
        (run / "config.yml").write_text(yaml.safe_dump(cfg))
        configs.append(str(run / "config.yml"))
    result = training_order.main([*configs, "--steps", "2", "--json"])
    a, b, c = (result[x] for x in configs)
    assert a["rows"] == a["distinct"] == 8  # 2 batches of 4 (micro_batch_size), all distinct
    assert b["same_order_as_first"] and b["shared_with_first"] == 8  # other folders, same seed
    assert not c["same_order_as_first"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
