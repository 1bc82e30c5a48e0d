"""research/bandits/bandit.py: its losses equal TRL's DPOTrainer, and its runs reproduce the
paper."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import load_script

bandit = load_script("research/bandits/bandit.py")
TRL_LOSS_TYPE = {"ipo": "ipo", "dpo": "sigmoid"}
ACTIONS = ["a", "b", "c"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the loss is TRL's -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm():
    """A word-level tokenizer over prompts, actions and EOS; two differently seeded tiny Llamas."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(["<pad>", "<eos>", "q", "r", *ACTIONS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>"
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    policy = LlamaForCausalLM(config)
    torch.manual_seed(1)
    ref = LlamaForCausalLM(config)
    return tokenizer, policy, ref


def _trainer(tiny_lm, loss: str, beta: float, tmp_path: Path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tokenizer, policy, ref = tiny_lm
    dataset = Dataset.from_dict(
        {"prompt": ["q", "r", "q"], "chosen": [" a", " b", " a"], "rejected": [" b", " c", " c"]}
    )
    args = DPOConfig(
        output_dir=str(tmp_path),
        loss_type=TRL_LOSS_TYPE[loss],
        beta=beta,
        report_to="none",
        use_cpu=True,
        bf16=False,
    )
    return DPOTrainer(
        model=policy, ref_model=ref, args=args, train_dataset=dataset, processing_class=tokenizer
    )


def _completion_logps(model, prompt_ids: list[int], completion_ids: list[int]) -> torch.Tensor:
    """Per-token log-probabilities of the completion given the prompt (teacher forcing)."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + completion_ids])).logits[0]
    logp = logits[len(prompt_ids) - 1 : -1].log_softmax(-1)
    return logp.gather(-1, torch.tensor(completion_ids)[:, None]).squeeze(-1)


def _logratios(trainer, examples: list[dict], key: str) -> list[torch.Tensor]:
    """Per-token log(pi / pi_ref) of each example's chosen or rejected completion."""
    return [
        _completion_logps(trainer.model, ex["prompt_ids"], ex[key])
        - _completion_logps(trainer.ref_model, ex["prompt_ids"], ex[key])
        for ex in examples
    ]


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("loss", ["ipo", "dpo"])
def test_loss_equals_trl_on_one_token_actions(tiny_lm, loss, beta, tmp_path):
    """A bandit action is one completion token: TRL's loss on it is the bandit's, exactly."""
    trainer = _trainer(tiny_lm, loss, beta, tmp_path)
    ids = trainer.processing_class.convert_tokens_to_ids
    examples = [
        {"prompt_ids": ids(["q"]), "chosen_ids": ids([w]), "rejected_ids": ids([lo])}
        for w, lo in [("a", "b"), ("b", "c"), ("a", "c"), ("c", "a")]
    ]
    trl_loss = trainer.compute_loss(trainer.model, trainer.data_collator(examples))

    chosen = torch.stack([r.sum() for r in _logratios(trainer, examples, "chosen_ids")])
    rejected = torch.stack([r.sum() for r in _logratios(trainer, examples, "rejected_ids")])
    ours = bandit.preference_loss(chosen, rejected, loss, beta).mean()
    assert chosen.abs().min() > 1e-3  # policy and reference differ, so the check is not vacuous
    torch.testing.assert_close(ours, trl_loss.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["ipo", "dpo"])
def test_trl_ipo_averages_log_ratios_per_token(tiny_lm, loss, tmp_path):
    """On TRL's own prepared data (action + EOS: 2 tokens) IPO gets the per-token mean, DPO the sum.

    This pins down the length normalisation in TRL's IPO (a bandit action is one token, so it
    does not matter there).
    """
    trainer = _trainer(tiny_lm, loss, 0.5, tmp_path)
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    assert all(len(ex["chosen_ids"]) == 2 for ex in examples)
    trl_loss = trainer.compute_loss(trainer.model, trainer.data_collator(examples))

    reduce = torch.mean if loss == "ipo" else torch.sum
    chosen = torch.stack([reduce(r) for r in _logratios(trainer, examples, "chosen_ids")])
    rejected = torch.stack([reduce(r) for r in _logratios(trainer, examples, "rejected_ids")])
    ours = bandit.preference_loss(chosen, rejected, loss, 0.5).mean()
    torch.testing.assert_close(ours, trl_loss.detach(), rtol=1e-5, atol=1e-6)


# --- closed form and simulation ----------------------------------------------------------------


@pytest.mark.parametrize("tau", bandit.TAUS)
def test_closed_form_matches_the_derivation(tau):
    _, one_pair = bandit.parse_pairs("y1>y2")
    sigmoid = 1 / (1 + math.exp(-1 / (2 * tau)))
    np.testing.assert_allclose(bandit.closed_form_ipo(2, one_pair, tau), [sigmoid, 1 - sigmoid])

    _, total_order = bandit.parse_pairs("a>b,b>c,a>c")
    x = 1 / (3 * tau)  # theta_a - theta_b = theta_b - theta_c
    expected = np.exp([2 * x, x, 0.0]) / np.exp([2 * x, x, 0.0]).sum()
    np.testing.assert_allclose(bandit.closed_form_ipo(3, total_order, tau), expected)


@pytest.mark.parametrize("spec", bandit.PAPER_DATASETS.values())
def test_ipo_simulation_reaches_closed_form(spec):
    actions, pairs = bandit.parse_pairs(spec)
    run = bandit.simulate(len(actions), pairs, "ipo", bandit.TAUS)
    for i, tau in enumerate(bandit.TAUS):
        exact = bandit.closed_form_ipo(len(actions), pairs, tau)
        np.testing.assert_allclose(run.final[i].mean(axis=0), exact, atol=0.01, err_msg=f"{tau=}")


@pytest.mark.parametrize("spec", bandit.PAPER_DATASETS.values())
def test_dpo_turns_greedy_for_every_tau(spec):
    actions, pairs = bandit.parse_pairs(spec)
    run = bandit.simulate(len(actions), pairs, "dpo", bandit.TAUS)
    assert (run.final.mean(axis=1)[:, 0] >= 0.99).all(), run.final.mean(axis=1)


def test_cli_json_is_the_last_line(capsys):
    bandit.main(["--pairs", "y1>y2", "--loss", "ipo", "--tau", "1", "--steps", "300", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["probs"]) == {"y1", "y2"}
    assert result["closed_form"]["y1"] == pytest.approx(1 / (1 + math.exp(-0.5)))


def test_parse_pairs_rejects_self_preference():
    with pytest.raises(ValueError):
        bandit.parse_pairs("a>a")
