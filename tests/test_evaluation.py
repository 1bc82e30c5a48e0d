"""The held-out evaluation: metrics, answer scoring, curves, and `axolotl-ipo eval` end to end."""

import json
import math
import sys

import pytest

from axolotl_ipo.evaluation.curves import read_curves
from axolotl_ipo.evaluation.metrics import (
    answer_words,
    contains_answer,
    exact_match,
    gold_nll,
    implicit_margins,
    length_matched_contains,
    logprob_preference_accuracy,
    normalise_text,
    paired_bootstrap,
    preference_accuracy,
    task_scores,
    token_f1,
)
from axolotl_ipo.evaluation.scoring import AnswerScore, score_answers
from axolotl_ipo.upstream.trl import tokenize_pair

from helpers import axolotl, axolotl_ipo, run, sft_config, write_config, write_jsonl


def S(mean: float, n: int = 2) -> AnswerScore:
    return AnswerScore(mean * n, n)


def test_preference_accuracy_counts_ties_as_half():
    assert preference_accuracy([1.0, -1.0, 0.0, 2.0]) == pytest.approx(2.5 / 4)
    assert preference_accuracy([0.0] * 5) == 0.5
    assert math.isnan(preference_accuracy([]))


def test_implicit_margins_are_token_averaged_log_ratios():
    # chosen: policy -1.0 vs ref -2.0 (+1); rejected: policy -3.0 vs ref -2.5 (-0.5)
    margins = implicit_margins([S(-1.0)], [S(-3.0, 4)], [S(-2.0)], [S(-2.5, 4)])
    assert margins == [pytest.approx(1.5)]
    # the reference against itself: every margin is exactly 0 -> accuracy 0.5
    ref_c, ref_r = [S(-1.0), S(-4.0)], [S(-2.0), S(-1.0)]
    assert implicit_margins(ref_c, ref_r, ref_c, ref_r) == [0.0, 0.0]
    assert logprob_preference_accuracy(ref_c, ref_r) == 0.5  # one right, one wrong


def test_gold_nll_pools_tokens():
    assert gold_nll([AnswerScore(-2.0, 1), AnswerScore(-4.0, 3)]) == pytest.approx(1.5)


def test_answer_matching_is_normalised_and_word_bounded():
    assert normalise_text("The  Eiffel Tower!") == "eiffel tower"
    assert contains_answer("It is the Eiffel tower, in Paris.", ["Eiffel Tower"])
    assert not contains_answer("Parisian", ["Paris"])  # whole words only
    assert contains_answer("1,600", ["1600"])
    assert exact_match("the Beatles.", ["Beatles", "x"])
    assert not exact_match("The Beatles were a band", ["Beatles"])
    assert not contains_answer("anything", [""])


def test_token_f1_penalises_extra_words():
    assert token_f1("Paris", ["Paris"]) == 1.0
    assert token_f1("The capital is Paris", ["Paris", "x"]) == pytest.approx(2 * (1 / 3) / (4 / 3))
    assert token_f1("London", ["Paris"]) == 0.0
    scores = task_scores(["Paris", "It is Paris, France"], [["Paris"], ["Paris"]])
    assert scores["task_contains"] == 1.0 and scores["task_exact"] == 0.5
    assert scores["task_f1"] == pytest.approx((1.0 + 0.4) / 2)  # 1 of 4 words: F1 0.4


def test_length_matched_contains_cuts_the_reference_to_the_policy_length():
    reference = ["The capital of France is Paris", "Berlin, of course", "It is Rome"]
    policy = ["France", "", "Rome"]
    golds = [["Paris"], ["Berlin"], ["Rome"]]
    assert task_scores(reference, golds)["task_contains"] == 1.0
    # cut to 1, 1 (at least one word) and 1 words: "The", "Berlin,", "It"
    assert length_matched_contains(reference, policy, golds) == pytest.approx(1 / 3)
    assert answer_words(reference) == pytest.approx((6 + 3 + 3) / 3)


def test_paired_bootstrap_interval_brackets_the_change():
    before = [0.0] * 50 + [1.0] * 50
    after = [1.0] * 50 + [1.0] * 50
    result = paired_bootstrap(before, after)
    assert result["change"] == pytest.approx(0.5)
    assert 0.35 < result["low"] < 0.5 < result["high"] < 0.65
    assert paired_bootstrap(before, before) == {"change": 0.0, "low": 0.0, "high": 0.0}
    assert paired_bootstrap(before, after) == result  # seeded
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_batched_scores_equal_one_sequence_at_a_time(tiny):
    import torch

    model, tokenizer = tiny
    prompts = ["<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n",
               "<|im_start|>user\nWho wrote Hamlet? Tell me.<|im_end|>\n<|im_start|>assistant\n",
               "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"]
    answers = ["5.<|im_end|>", "William Shakespeare wrote it<|im_end|>", "Hello"]
    batched = score_answers(model, tokenizer, prompts, answers, batch_size=3)
    for prompt, answer, got in zip(prompts, answers, batched, strict=True):
        p_ids, a_ids = tokenize_pair(tokenizer, prompt, answer)
        ids = torch.tensor([p_ids + a_ids])
        with torch.no_grad():
            logps = torch.log_softmax(model(ids).logits[0, :-1], -1)
        want = sum(logps[len(p_ids) - 1 + t, a].item() for t, a in enumerate(a_ids))
        assert got.n_tokens == len(a_ids)
        assert got.logp_sum == pytest.approx(want, abs=1e-4)
    # EOS is appended exactly once, as TRL does
    assert tokenize_pair(tokenizer, prompts[2], "Hello")[1][-1] == tokenizer.eos_token_id
    _, answer_ids = tokenize_pair(tokenizer, prompts[0], "5.<|im_end|>")
    assert answer_ids.count(tokenizer.eos_token_id) == 1


SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


def _full_pass_score(model, tokenizer, prompt, answer):
    """One full forward pass of prompt + answer: (sum of the answer's log-probs, tokens)."""
    import torch

    p_ids, a_ids = tokenize_pair(tokenizer, prompt, answer)
    with torch.no_grad():
        logps = torch.log_softmax(model(torch.tensor([p_ids + a_ids])).logits[0, :-1], -1)
    scored = [(len(p_ids) - 1 + t, a) for t, a in enumerate(a_ids) if len(p_ids) - 1 + t >= 0]
    return sum(logps[pos, a].item() for pos, a in scored), len(scored)


SHARED_PROMPTS = [
    SYSTEM + "<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n",
    SYSTEM + "<|im_start|>user\nWho wrote Hamlet? Tell me.<|im_end|>\n<|im_start|>assistant\n",
    SYSTEM + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
]
# gold and sampled answers to the same prompts (as the evaluation scores them), a repeat,
# a one-token answer (only its EOS) and answers of very different lengths
SHARED_PAIRS = [
    (0, "5.<|im_end|>"), (1, "William Shakespeare wrote it<|im_end|>"), (2, "Hello"),
    (0, "The answer is 5. Subtract 4 from 9 and you get 5, the sea rolls in."), (1, "Paris"),
    (2, ""), (0, "5.<|im_end|>"),
]


@pytest.mark.parametrize("batch_size", [1, 2, 64])
@pytest.mark.parametrize("shared_prefix", [True, False])
def test_scores_equal_one_full_pass_per_sequence(tiny, batch_size, shared_prefix):
    """Shared prefix, one pass per prompt, answers on its KV cache, length chunks: the sums
    equal a full forward pass of each sequence alone, in fp32, at any batch size."""
    model, tokenizer = tiny
    prompts = [SHARED_PROMPTS[i] for i, _ in SHARED_PAIRS]
    answers = [a for _, a in SHARED_PAIRS]
    if not shared_prefix:  # no token in common: left padding with nothing before it
        prompts, answers = prompts + ["Hi there", ""], answers + ["Hello", "Hello there"]
    got = score_answers(model, tokenizer, prompts, answers, batch_size=batch_size)
    for prompt, answer, score in zip(prompts, answers, got, strict=True):
        want, n_tokens = _full_pass_score(model, tokenizer, prompt, answer)
        assert score.n_tokens == n_tokens
        assert abs(score.logp_sum - want) <= 1e-5 * max(n_tokens, 1), (prompt, answer)  # per token


def test_each_prompt_and_answer_runs_once(tiny):
    """The tokens the model runs: the shared prefix once, each distinct prompt's rest once,
    each distinct answer once without its last token (padding not counted)."""
    from axolotl_ipo.evaluation.scoring import encode_answers

    model, tokenizer = tiny
    prompts = [SHARED_PROMPTS[i] for i, _ in SHARED_PAIRS]
    answers = [a for _, a in SHARED_PAIRS]
    encoded = encode_answers(tokenizer, prompts, answers)
    ran = []

    def count(_module, args, kwargs):
        ids, mask = kwargs.get("input_ids", args[0] if args else None), kwargs.get("attention_mask")
        ran.append(ids.numel() if mask is None else int(mask[:, -ids.shape[1] :].sum()))

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        score_answers(model, tokenizer, prompts, answers, batch_size=2)
    finally:
        handle.remove()
    distinct_prompts = {p for p, _ in encoded}
    prefix = len(tokenizer(SYSTEM + "<|im_start|>user\n")["input_ids"])
    assert all(p[:prefix] == next(iter(distinct_prompts))[:prefix] for p in distinct_prompts)
    want = prefix + sum(len(p) - prefix for p in distinct_prompts)
    want += sum(len(a) - 1 for a in {pair[1] for pair in set(encoded)})
    assert sum(ran) == want < sum(len(p) + len(a) for p, a in encoded) / 2


def test_answer_chunks_split_long_from_short_answers():
    from axolotl_ipo.evaluation.scoring import _chunks

    assert _chunks([30, 3, 31, 2]) == [[2, 0], [1, 3]]  # 2 x 31 + 2 x 3 + 2 passes
    assert _chunks([5, 4, 5]) == [[0, 2, 1]]  # padding 1 token < one more pass
    assert _chunks([]) == []


def test_tokenisation_matches_trl_dpo(tiny):
    """The ids TRL's DPOTrainer trains on for a text pair (its own preprocessing code). Fails,
    never skips, on a TRL that moved it: then `upstream/trl.py` needs a look."""
    from trl import data_utils

    assert hasattr(data_utils, "_tokenize"), (
        "trl.data_utils._tokenize is gone: this TRL tokenises DPO pairs elsewhere; update "
        "axolotl_ipo/upstream/trl.py (tokenize_pair and REQUIRED)"
    )
    _, tokenizer = tiny
    prompt = "<|im_start|>user\nWho wrote Hamlet?<|im_end|>\n<|im_start|>assistant\n"
    for answer in ("Shakespeare.", "Shakespeare.<|im_end|>"):
        text = answer if answer.endswith(tokenizer.eos_token) else answer + tokenizer.eos_token
        prompt_ids = data_utils._tokenize(tokenizer, prompt)["input_ids"]
        full = data_utils._tokenize(tokenizer, prompt + text)["input_ids"]
        assert tokenize_pair(tokenizer, prompt, answer) == (prompt_ids, full[len(prompt_ids):])


def test_read_curves_gives_ipo_distance_to_target_and_summed_margins(tmp_path):
    records = [
        {"event": "train_begin", "ipo_tau": 0.5, "loss_type": ["ipo"]},
        {"step": 1, "ipo_tau": 0.5, "loss": 1.0, "rewards/margins": 0.0, "logps/chosen": -3.0,
         "logps/rejected": -2.0},
        {"step": 2, "ipo_tau": 0.5, "loss": 0.25, "rewards/margins": 0.25},
        {"step": 2, "train_runtime": 3.0, "train_loss": 0.7},
    ]
    (tmp_path / "ipo_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    curves = read_curves(tmp_path)
    assert curves.steps == [1, 2] and curves.loss == [1.0, 0.25]
    assert curves.summed_margin == [0.0, 0.5] and curves.target_margin == 1.0
    assert curves.rms_from_target == [1.0, 0.5]  # sqrt of IPO's mean squared distance
    assert curves.loss_type == ["ipo"]
    assert read_curves(tmp_path / "missing") is None


HELDOUT_ROWS = [
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris",
     "answers": ["Paris", "paris, france"]},
    {"instruction": "Who wrote Hamlet?", "input": "", "output": "Shakespeare"},
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Name the sea.", "input": "", "output": "The sea"},
    {"instruction": "An empty answer", "input": "", "output": ""},
]


@pytest.mark.e2e
def test_eval_compares_base_and_trained_model(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path, sft_config(tiny_model_dir, tmp_path))
    code, log = run(axolotl("train", cfg), tmp_path)
    assert code == 0, log[-3000:]
    heldout = write_jsonl(tmp_path / "heldout.jsonl", HELDOUT_ROWS)
    argv = axolotl_ipo("eval", str(cfg), "--data", str(heldout), "--max-new-tokens", "8")
    code, log = run(argv, tmp_path)
    assert code == 0, log[-3000:]
    report = json.loads((tmp_path / "out" / "ipo_eval" / "metrics.json").read_text())
    base, trained = report["models"]["base"], report["models"]["trained"]
    assert report["heldout"]["prompts"] == 4 and report["heldout"]["invalid_rows"] == 1
    assert 1 <= report["heldout"]["pairs"] <= 4
    # the base model is IPO's reference: zero margins, accuracy exactly one half
    assert base["preference_accuracy"] == 0.5 and base["implicit_margin"] == 0.0
    assert trained["implicit_margin"] != 0.0
    for metrics in (base, trained):
        for key in ("logprob_preference_accuracy", "gold_nll", "task_contains", "task_exact",
                    "task_f1", "answer_words"):
            assert isinstance(metrics[key], float) and not math.isnan(metrics[key]), key
    assert base["task_contains_base_same_length"] is None
    assert 0.0 <= trained["task_contains_base_same_length"] <= base["task_contains"]
    for key, change in report["task_changes"].items():
        assert change["low"] <= change["change"] <= change["high"], key
        assert change["change"] == pytest.approx(trained[key] - base[key]), key
    assert "paired bootstrap 95% interval" in log
    assert trained["gold_nll"] != base["gold_nll"]
    curves = report["curves"]
    assert curves["loss_type"] == ["ipo"] and len(curves["steps"]) == 3
    assert curves["loss"][0] == pytest.approx(25.0, abs=1e-3)
    assert curves["rms_margin_from_target"][0] == pytest.approx(5.0, abs=1e-4)  # policy == ref
    train = report["training_pairs"]  # the 8 pairs it trained on, scored after training
    assert train["pairs"] == 8 and train["target_margin"] == pytest.approx(5.0)
    assert train["mean_margin"] != 0.0
    assert "preference accuracy (IPO implicit reward)" in log and "change" in log
    assert "training pairs (8): mean token-averaged log-ratio margin" in log
    assert (tmp_path / "out" / "ipo_eval" / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {tmp_path / 'out' / 'ipo_eval' / 'eval.png'}" in log
    predictions = (tmp_path / "out" / "ipo_eval" / "predictions_trained.jsonl").read_text()
    assert len(predictions.splitlines()) == 4

    # a second evaluation reuses the base model's scores and the held-out pairs
    code, log = run(argv, tmp_path)
    assert code == 0, log[-3000:]
    assert "hit: nothing sampled" in log and "base model scores: cached" in log
    assert "base model scores of the training pairs: cached" in log
    again = json.loads((tmp_path / "out" / "ipo_eval" / "metrics.json").read_text())
    assert again["models"] == {
        name: {**m, "seconds": again["models"][name]["seconds"]}
        for name, m in report["models"].items()
    }

    # --dtype bfloat16: both models in bf16, its own base cache, the same metrics up to rounding
    code, log = run([*argv, "--dtype", "bfloat16", "--output", str(tmp_path / "bf16")], tmp_path)
    assert code == 0, log[-3000:]
    assert "base model scores: cached" not in log
    bf16 = json.loads((tmp_path / "bf16" / "metrics.json").read_text())
    assert bf16["settings"]["dtype"] == "bfloat16" and report["settings"]["dtype"] == "auto"
    for name in ("base", "trained"):
        fp32_nll, bf16_nll = report["models"][name]["gold_nll"], bf16["models"][name]["gold_nll"]
        assert bf16_nll == pytest.approx(fp32_nll, rel=0.02) and bf16_nll != fp32_nll

    code, log = run(axolotl_ipo("eval", str(cfg), "--data", str(heldout), "--adapter", "nowhere"),
                    tmp_path)
    assert code != 0 and "holds neither a PEFT adapter" in log and "Traceback" not in log


@pytest.mark.parametrize(("name", "expected"), [("auto", "float32"), ("bfloat16", "bfloat16")])
def test_models_load_in_the_precision_asked_for(tiny_model_dir, name, expected):
    import torch

    from axolotl_ipo.evaluation.models import load_base

    model = load_base(str(tiny_model_dir), dtype=name)  # auto on a CPU: fp32
    assert {p.dtype for p in model.parameters()} == {getattr(torch, expected)}


def test_trained_kind_tells_adapters_from_full_checkpoints(tmp_path):
    from axolotl_ipo.evaluation.models import trained_kind

    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text("{}")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "config.json").write_text("{}")
    assert trained_kind(tmp_path / "lora") == "adapter"
    assert trained_kind(tmp_path / "full") == "full"
    with pytest.raises(FileNotFoundError, match="neither a PEFT adapter .* nor a model"):
        trained_kind(tmp_path)


def test_plot_without_matplotlib_says_so_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from axolotl_ipo.evaluation.report import plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert plot({"models": {}}, tmp_path / "eval.png") is None
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert not (tmp_path / "eval.png").exists()


def test_loading_an_adapter_leaves_the_base_model_as_it_was(tiny_model_dir, tmp_path):
    """The base model stays the reference after the trained one is loaded: scores taken from it
    later (in any order) are the base model's, not the merged policy's."""
    import torch
    from peft import LoraConfig, get_peft_model

    from axolotl_ipo.evaluation.models import load_base, load_trained

    adapter = get_peft_model(load_base(str(tiny_model_dir)),
                             LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, weight in adapter.named_parameters():
            if "lora_B" in name:
                weight.fill_(0.5)  # a LoRA update that changes the model
    adapter.save_pretrained(tmp_path / "adapter")
    base = load_base(str(tiny_model_dir))
    before = {name: weight.clone() for name, weight in base.state_dict().items()}
    trained = load_trained(base, tmp_path / "adapter")
    after = base.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    changed = trained.state_dict()
    assert any(not torch.equal(before[name], changed[name]) for name in before if name in changed)
