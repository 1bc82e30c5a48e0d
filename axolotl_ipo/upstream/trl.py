"""The TRL adapter: its DPO loss names and how its DPOTrainer tokenises a text pair."""

from __future__ import annotations

from typing import Any

# Every TRL name this module touches or copies ("module:attribute"); tests/test_upstream.py
# resolves each on the installed release. DPOConfig fields count as attributes.
REQUIRED = (
    "trl:DPOConfig.loss_type",  # ipo_losses
    "trl:DPOConfig.loss_weights",
    "trl:DPOConfig.beta",
    "trl.data_utils:_tokenize",  # what tokenize_pair copies...
    "trl.trainer.dpo_trainer:_tokenize",  # ...and what DPOTrainer uses it for
)


def ipo_losses(sft_weight: float | None = None) -> dict:
    """TRL's `loss_type` (and `loss_weights` with an SFT term) for IPO [+ alpha * SFT]."""
    if not sft_weight:
        return {"loss_type": ["ipo"]}
    return {"loss_type": ["ipo", "sft"], "loss_weights": [1.0, float(sft_weight)]}


def tokenize_pair(tokenizer: Any, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) as TRL's DPOTrainer builds them for text pairs: EOS appended to
    the answer text unless it already ends with it, then ``tok(prompt)`` and
    ``tok(prompt + answer)[len(prompt ids):]`` (`trl.data_utils._tokenize`, TRL 1.9-1.14; a
    copy, because the private function may move: tests compare the two on every release)."""
    eos = tokenizer.eos_token
    if eos and not answer.endswith(eos):
        answer = answer + eos
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + answer)["input_ids"]
    return prompt_ids, full_ids[len(prompt_ids) :]


def set_ipo_loss(trainer: Any, tau: float, sft_weight: float) -> None:
    """Give a built DPOTrainer a new tau (its `beta`) and SFT weight before its first step: TRL
    1.9-1.14 read `self.beta` and `self.loss_weights` (set from the args in `__init__`) in
    every loss computation; the args are updated too, so what is saved says what was used."""
    trainer.beta = tau
    trainer.args.beta = tau
    weights = [
        float(sft_weight) if loss == "sft" else float(weight)
        for loss, weight in zip(trainer.loss_types, trainer.loss_weights, strict=True)
    ]
    trainer.loss_weights = weights
    trainer.args.loss_weights = list(weights)
