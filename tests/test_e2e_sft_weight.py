"""`ipo_sft_weight` and the `ipo/...` diagnostics through the real Axolotl CLI on the tiny model."""

import json
import math

import pytest

from helpers import axolotl, read_jsonl, read_metrics, run, sft_config, write_config

pytestmark = pytest.mark.e2e


def chosen_nll(model_dir, pairs: list[dict], max_length: int) -> float:
    """Token-averaged NLL of every chosen answer under the base model (the step-0 policy),
    tokenised as TRL does: TRL's sft loss over one batch holding all pairs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_ipo.evaluation.scoring import score_answers

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    scores = score_answers(model, tokenizer, [p["prompt"] for p in pairs],
                           [p["chosen"] for p in pairs], max_length=max_length)
    return -sum(s.logp_sum for s in scores) / sum(s.n_tokens for s in scores)


def test_sft_weight_adds_alpha_times_the_chosen_nll_at_step_0(tiny_model_dir, tmp_path):
    alpha, tau = 0.5, 0.1
    # one batch holds every pair (8 valid SFT rows), so TRL's batch NLL is over all chosen answers
    raw = sft_config(tiny_model_dir, tmp_path, ipo_sft_weight=alpha, micro_batch_size=16,
                     max_steps=1)
    code, log = run(axolotl("train", write_config(tmp_path, raw)), tmp_path)
    assert code == 0, log[-3000:]
    begin, steps = read_metrics(tmp_path / "out")
    assert begin["loss_type"] == ["ipo", "sft"] and begin["loss_weights"] == [1.0, alpha]
    [pairs_file] = (tmp_path / "prepared" / "ipo_pairs").glob("*/pairs.jsonl")
    pairs = read_jsonl(pairs_file)
    assert len(pairs) >= 4
    nll = chosen_nll(tiny_model_dir, pairs, raw["sequence_len"])
    assert nll > 1.0  # a random model: the SFT term is far from negligible
    assert steps[0]["loss"] == pytest.approx((1 / (2 * tau)) ** 2 + alpha * nll, rel=1e-4)
    assert "ipo/target_distance" not in steps[0]  # sqrt(loss) is no IPO distance with SFT added


def test_solved_prompts_kept_for_nll_train_on_their_chosen_nll(tiny_model_dir, tmp_path):
    """`solved: nll`: "Say hello." (every sample right under user_checks:coin) trains with its
    gold answer on both sides: its IPO term is the constant (1/(2 tau))^2 and its chosen NLL
    joins the batch's sft term, so step 0's loss is that constant plus alpha times the NLL of
    every row."""
    alpha, tau = 0.5, 0.1
    sampling = {"max_new_tokens": 12, "batch_size": 3, "temperature": 1.0, "num_samples": 2,
                "answer_check": "user_checks:coin", "solved": "nll"}
    raw = sft_config(tiny_model_dir, tmp_path, ipo_sft_weight=alpha, micro_batch_size=16,
                     max_steps=1, rejection_sampling=sampling)
    code, log = run(axolotl("train", write_config(tmp_path, raw)), tmp_path)
    assert code == 0, log[-3000:]
    [pairs_file] = (tmp_path / "prepared" / "ipo_pairs").glob("*/pairs.jsonl")
    pairs = read_jsonl(pairs_file)
    solved = [p for p in pairs if p.get("solved")]
    assert len(solved) == 1 and "Say hello." in solved[0]["prompt"]
    assert solved[0]["rejected"] == solved[0]["chosen"] and len(pairs) > len(solved)
    summary = json.loads((pairs_file.parent / "summary.json").read_text(encoding="utf-8"))
    assert (summary["solved_kept"], summary["pairs_out"]) == (1, len(pairs) - 1)
    _, steps = read_metrics(tmp_path / "out")
    nll = chosen_nll(tiny_model_dir, pairs, raw["sequence_len"])
    assert steps[0]["loss"] == pytest.approx((1 / (2 * tau)) ** 2 + alpha * nll, rel=1e-4)


def tensorboard_scalars(folder) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[float]] = {}
    for events in folder.rglob("events.out.tfevents*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
    return scalars


def test_ipo_diagnostics_reach_the_metrics_file_and_tensorboard(tiny_model_dir, tmp_path):
    raw = sft_config(tiny_model_dir, tmp_path, use_tensorboard=True, max_steps=2)
    code, log = run(axolotl("train", write_config(tmp_path, raw)), tmp_path)
    assert code == 0, log[-3000:]
    _, steps = read_metrics(tmp_path / "out")
    for step in steps:
        assert step["ipo/target_distance"] == pytest.approx(math.sqrt(step["loss"]))
    assert steps[0]["ipo/target_distance"] == pytest.approx(5.0, abs=1e-3)  # 1/(2*0.1)
    board = tensorboard_scalars(tmp_path / "out")
    tags = [tag for tag in board if tag.endswith("ipo/target_distance")]
    assert tags, sorted(board)
    assert board[tags[0]][0] == pytest.approx(5.0, abs=1e-3)
