"""Self-play's pieces without training: round configs, launch lines, round stats, the table."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from axolotl_ipo.selfplay import (
    SelfplayError,
    SelfplayRun,
    format_rounds,
    loss_ends,
    pair_stats,
    round_config,
    round_seed,
    run_selfplay,
    train_argv,
)

USER = {
    "base_model": "org/base",
    "rl": "ipo",
    "output_dir": "out",
    "dataset_prepared_path": "prepared",
    "lora_model_dir": "old-adapter",
    "datasets": [{"path": "sft.jsonl", "type": "alpaca"}],
    # keys selfplay does not know (another feature's) must pass through untouched
    "rejection_sampling": {"model": "org/weak", "output_dir": "pairs", "num_samples": 3,
                           "answer_check": "contains"},
}


def test_round_1_keeps_the_config_with_its_own_folders(tmp_path):
    cfg = round_config(USER, tmp_path / "round-1", None)
    assert cfg["output_dir"] == str(tmp_path / "round-1")
    assert cfg["dataset_prepared_path"] == str(tmp_path / "round-1" / "prepared")
    assert cfg["base_model"] == "org/base" and cfg["lora_model_dir"] == "old-adapter"
    assert cfg["rejection_sampling"] == {"model": "org/weak", "num_samples": 3,
                                         "answer_check": "contains"}
    assert USER["rejection_sampling"]["output_dir"] == "pairs"  # the user's mapping is not changed


def test_later_rounds_train_and_sample_from_the_previous_model(tmp_path):
    cfg = round_config(USER, tmp_path / "round-2", "/runs/round-1/merged")
    assert cfg["base_model"] == "/runs/round-1/merged" and "lora_model_dir" not in cfg
    assert cfg["rejection_sampling"] == {"num_samples": 3, "answer_check": "contains"}
    assert cfg["datasets"] == USER["datasets"] and cfg["rl"] == "ipo"


def test_without_rejection_sampling_keys_none_are_added(tmp_path):
    user = {k: v for k, v in USER.items() if k != "rejection_sampling"}
    assert "rejection_sampling" not in round_config(user, tmp_path, "/m")


def test_reseed_gives_round_k_seed_plus_k_minus_1_and_round_1_its_own(tmp_path):
    assert [round_seed({"seed": 7}, k, True) for k in (1, 2, 3)] == [None, 8, 9]
    assert round_seed({}, 3, True) == 44  # transformers' default seed 42 when the config has none
    assert round_seed({"seed": 0}, 2, True) == 1
    assert round_seed({"seed": 7}, 3, False) is None  # without --reseed every round keeps it
    assert round_config({**USER, "seed": 7}, tmp_path, "/m", 9)["seed"] == 9
    assert round_config({**USER, "seed": 7}, tmp_path, "/m")["seed"] == 7


@pytest.mark.parametrize(
    ("launcher", "argv"),
    [
        ([sys.executable], [sys.executable, "-m", "axolotl.cli.train", "c.yml"]),
        (["accelerate", "launch", "--num_processes", "2"],
         ["accelerate", "launch", "--num_processes", "2", "-m", "axolotl.cli.train", "c.yml"]),
        (["python", "-m", "axolotl.cli.train"], ["python", "-m", "axolotl.cli.train", "c.yml"]),
    ],
)
def test_train_argv(launcher, argv):
    assert train_argv(launcher, Path("c.yml")) == argv


def write_store(round_dir: Path, summary: dict, complete: bool = True) -> Path:
    store = round_dir / "prepared" / "ipo_pairs" / "abc"
    store.mkdir(parents=True)
    (store / "summary.json").write_text(json.dumps(summary))
    if complete:
        (store / "COMPLETE").write_text("")
    return store


def test_pair_stats_read_the_counters_the_store_writes(tmp_path):
    from axolotl_ipo.pairs.summary import PairsSummary

    summary = PairsSummary(rows_in=9, pairs_out=7, samples_judged=12, samples_right=5,
                           dropped={"already_solved": 2, "rejected_equals_chosen": 1})
    store = write_store(tmp_path, summary.to_dict())
    assert pair_stats(tmp_path) == {"pairs": 7, "samples_judged_right": 5,
                                    "prompts_already_solved": 2, "pair_store": str(store)}


def test_pair_stats_tolerate_a_store_without_check_counters_or_unfinished(tmp_path):
    write_store(tmp_path / "a", {"pairs_out": 7})
    assert pair_stats(tmp_path / "a")["samples_judged_right"] is None
    write_store(tmp_path / "b", {"pairs_out": 7}, complete=False)
    assert pair_stats(tmp_path / "b")["pairs"] is None


def test_loss_ends_from_the_metrics_file(tmp_path):
    lines = [{"event": "train_begin", "ipo_tau": 0.1, "loss_type": ["ipo"]},
             {"step": 1, "loss": 25.0, "rewards/margins": 0.0},
             {"step": 2, "loss": 20.0, "rewards/margins": 0.1},
             {"step": 2, "train_loss": 22.5}]
    (tmp_path / "ipo_metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert loss_ends(tmp_path) == {"loss_first": 25.0, "loss_last": 20.0}
    assert loss_ends(tmp_path / "missing") == {"loss_first": None, "loss_last": None}


def test_finished_rounds_are_read_not_redone(tmp_path):
    run = SelfplayRun(config_path=tmp_path / "c.yml", output_dir=tmp_path, rounds=2,
                      launcher=["/nonexistent-launcher"])
    run.config_path.write_text("base_model: m\n")
    for index in (1, 2):
        run.round_dir(index).mkdir()
        record = {"round": index, "model": f"m{index}"}
        (run.round_dir(index) / "round.json").write_text(json.dumps(record))
    assert [r["model"] for r in run_selfplay(run)] == ["m1", "m2"]  # no launch attempted
    assert json.loads((tmp_path / "selfplay.json").read_text())["rounds"][1]["model"] == "m2"


def test_table_has_a_row_per_round_with_short_paths(tmp_path):
    record = {"round": 2, "generator": str(tmp_path / "round-1" / "merged"), "pairs": 8,
              "samples_judged_right": None, "prompts_already_solved": 3, "loss_first": 25.0,
              "loss_last": 24.5, "model": str(tmp_path / "round-2" / "merged"),
              "heldout": {"models": {"trained": {"preference_accuracy": 0.75, "gold_nll": 2.0,
                                                 "task_contains": 0.1}}}}
    table = format_rounds([record], tmp_path)
    row = table.splitlines()[2].split()
    assert row == ["2", "round-1/merged", "8", "-", "3", "25.000", "24.500", "round-2/merged",
                   "0.750", "2.000", "0.100"]


@pytest.mark.parametrize("reseed", [False, True])
def test_the_reseed_flag_reaches_the_rounds_config(tiny_model_dir, tmp_path, reseed):
    """`axolotl-ipo selfplay --reseed`: round 2's config.yml trains with seed + 1."""
    from axolotl_ipo.cli import _selfplay_run, build_parser

    from helpers import sft_config, write_config

    config = write_config(tmp_path, sft_config(tiny_model_dir, tmp_path, seed=5))
    args = build_parser().parse_args(["selfplay", str(config), "--rounds", "2",
                                      "--launcher", "/nonexistent-launcher",
                                      *(["--reseed"] if reseed else [])])
    run = _selfplay_run(args)
    assert isinstance(run, SelfplayRun), run
    assert run.reseed is reseed
    run.round_dir(1).mkdir(parents=True)
    (run.round_dir(1) / "round.json").write_text(json.dumps({"round": 1, "model": "m1"}))
    with pytest.raises(SelfplayError, match="cannot run"):
        run_selfplay(run)
    cfg = yaml.safe_load((run.round_dir(2) / "config.yml").read_text())
    assert (cfg["seed"], cfg["base_model"]) == (6 if reseed else 5, "m1")


def save_weights(folder: Path, n: int = 4) -> Path:
    """A real safetensors file with one tensor of ``n`` floats, and a config.json."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    save_file({"w": torch.ones(n)}, str(folder / "model.safetensors"))
    return folder / "model.safetensors"


def test_a_full_fine_tune_with_weights_cut_short_is_not_the_next_base(tmp_path):
    from axolotl_ipo.selfplay import _produce_model

    run = SelfplayRun(config_path=tmp_path / "c.yml", output_dir=tmp_path, rounds=2,
                      launcher=["x"], adapter=None)
    weights = save_weights(run.round_dir(1))
    assert _produce_model(run, 1, tmp_path / "c.yml") == run.round_dir(1)
    weights.write_bytes(weights.read_bytes()[:-5])  # a save killed before its last bytes
    with pytest.raises(SelfplayError, match=r"round 1: .*model.safetensors is cut short"):
        _produce_model(run, 1, tmp_path / "c.yml")
    weights.unlink()
    with pytest.raises(SelfplayError, match=r"round 1: .*no model weights"):
        _produce_model(run, 1, tmp_path / "c.yml")


def test_a_sharded_save_missing_a_shard_is_not_the_next_base(tmp_path):
    from axolotl_ipo.selfplay import _produce_model

    run = SelfplayRun(config_path=tmp_path / "c.yml", output_dir=tmp_path, rounds=2,
                      launcher=["x"], adapter=None)
    folder = run.round_dir(1)
    save_weights(folder).rename(folder / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"w": "model-00001-of-00002.safetensors",
                            "v": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(SelfplayError, match=r"model-00002-of-00002.safetensors .* missing"):
        _produce_model(run, 1, tmp_path / "c.yml")
