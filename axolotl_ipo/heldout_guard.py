"""The collapse guard: a seeded slice of the user's SFT rows, kept out of the pairs, whose gold
answers' NLL per token is watched while IPO trains.

IPO's collapse has a signature (research/skill_study/README.md): the gold answers become less
likely while the margin grows. Plain SFT lowers this NLL; a recipe that raises it above its
value at the start makes the gold answers less likely than the model it started from did. The
slice is chosen before sampling, so its rows are never trained on, and it is the same on every
rank and in every run with the same rows and seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from axolotl_ipo.args import GUARD_MAX_RISE, GUARD_MAX_ROWS, GUARD_SHARE

GUARD_BATCH = 8  # held-out rows per forward pass

T = TypeVar("T")


def guard_size(n_rows: int, setting: int | None) -> int:
    """How many of ``n_rows`` SFT rows the guard holds out: ``setting`` when given (0 = off,
    never all of them), else min(5%, 64) and none below 20 rows."""
    if setting is not None:
        return min(setting, max(n_rows - 1, 0))
    return min(int(n_rows * GUARD_SHARE), GUARD_MAX_ROWS)


def split_heldout(rows: Sequence[T], size: int, seed: int) -> tuple[list[T], list[T]]:
    """(held-out rows, training rows): ``size`` rows drawn with ``seed``, both in input order."""
    if size <= 0:
        return [], list(rows)
    chosen = set(random.Random(f"axolotl-ipo-guard-{seed}").sample(range(len(rows)), size))
    held = [row for i, row in enumerate(rows) if i in chosen]
    kept = [row for i, row in enumerate(rows) if i not in chosen]
    return held, kept


@dataclass
class GuardVerdict:
    """One logging step's check: the NLL, the start's, and whether it is over the limit."""

    step: int
    nll: float
    start: float
    start_step: int
    max_rise: float

    @property
    def rise(self) -> float:
        return self.nll / self.start - 1.0 if self.start > 0 else 0.0

    @property
    def over(self) -> bool:
        return math.isfinite(self.nll) and self.rise > self.max_rise

    def message(self, rows: int) -> str:
        return (
            f"IPO collapse guard: held-out gold NLL/token rose to {self.nll:.4g} at step "
            f"{self.step}, +{100 * self.rise:.0f}% over its {self.start:.4g} at step "
            f"{self.start_step} (limit +{100 * self.max_rise:.0f}%, {rows} held-out SFT rows): "
            "the gold answers are becoming less likely. Fix: raise `ipo_sft_weight` (the NLL "
            "term on the gold answers) or train fewer steps; `ipo_guard_stop: true` stops here "
            "and keeps the last good weights."
        )


@dataclass
class GuardState:
    """The held-out gold NLL curve, judged against its first value: the model training started
    from (the reference). Not against its lowest: a healthy run's curve bumps up and back
    (SmolLM2-135M on addition from the base model, IPO + NLL at lr 2e-4, batch 4: 0.564 at
    step 15, 0.879 at step 20, 0.567 at step 25), while a model that makes the gold answers
    less likely than it found them is doing harm whatever came before."""

    max_rise: float = GUARD_MAX_RISE
    curve: list[tuple[int, float]] = field(default_factory=list)

    def record(self, step: int, nll: float) -> GuardVerdict:
        start, start_step = next(
            ((value, s) for s, value in self.curve if math.isfinite(value)), (nll, step))
        self.curve.append((step, nll))
        return GuardVerdict(step, nll, start, start_step, self.max_rise)

    def summary(self) -> dict[str, Any]:
        if not self.curve:
            return {}
        start, end = self.curve[0][1], self.curve[-1][1]
        return {
            "heldout_gold_nll_start": start,
            "heldout_gold_nll_end": end,
            "heldout_gold_nll_lowest": min(value for _, value in self.curve),
            "heldout_gold_nll_change": end / start - 1.0 if start > 0 else None,
        }


@dataclass(frozen=True)
class GuardRows:
    """The held-out slice as TRL scores it: chat-template prompts and gold answers."""

    prompts: list[str]
    golds: list[str]
    too_long: int = 0  # rows whose prompt leaves no room for an answer in sequence_len

    @classmethod
    def render(cls, examples: Sequence[Any], tokenizer: Any, sequence_len: int | None) -> GuardRows:
        from axolotl_ipo.pairs.build import render_prompts

        rendered, bad = render_prompts(examples, tokenizer, sequence_len)
        return cls([p.text for p in rendered], [p.example.gold for p in rendered], len(bad))

    def gold_nll(self, model: Any, tokenizer: Any, max_length: int | None,
                 batch_size: int = GUARD_BATCH) -> float:
        """Mean NLL per gold-answer token (tokenised as TRL does, EOS included) under ``model``,
        in eval mode without gradients; the model's mode is put back. One plain forward pass
        per batch, no KV-cache reuse: it runs under whatever wraps the model in training
        (PEFT, 4-bit layers, DeepSpeed)."""
        import torch

        from axolotl_ipo.evaluation.scoring import encode_answers

        encoded = encode_answers(tokenizer, self.prompts, self.golds, max_length)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        device = next(model.parameters()).device
        total, tokens = 0.0, 0
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(encoded), batch_size):
                    batch = encoded[start:start + batch_size]
                    width = max(len(p) + len(a) for p, a in batch)
                    ids = torch.full((len(batch), width), pad, dtype=torch.long)
                    mask = torch.zeros((len(batch), width), dtype=torch.long)
                    scored = torch.zeros((len(batch), width), dtype=torch.bool)
                    for row, (p, a) in enumerate(batch):
                        ids[row, : len(p) + len(a)] = torch.tensor(p + a)
                        mask[row, : len(p) + len(a)] = 1
                        scored[row, len(p): len(p) + len(a)] = True
                    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                    picked = logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
                    keep = scored[:, 1:].to(device)
                    total -= float(picked[keep].sum())
                    tokens += int(keep.sum())
        finally:
            model.train(training)
        return total / tokens if tokens else float("nan")


def guard_callback(cfg: Any, examples: Sequence[Any], tokenizer: Any) -> Any:
    """The trainer callback that watches ``examples`` (the slice `training_rows` held out), or
    None when the guard is off or has no row to score."""
    from axolotl_ipo.callbacks import LOG, HeldoutGuardCallback

    if not examples:
        if cfg.get("ipo_guard_rows") != 0:
            LOG.info("IPO collapse guard: off (no SFT rows held out; it needs an SFT dataset of "
                     "at least %d rows or `ipo_guard_rows`)", int(1 / GUARD_SHARE))
        return None
    rows = GuardRows.render(examples, tokenizer, cfg.get("sequence_len"))
    if rows.too_long:
        LOG.warning("IPO collapse guard: %d of its %d held-out rows have prompts too long for "
                    "sequence_len and are not scored", rows.too_long, len(examples))
    if not rows.prompts:
        return None
    max_rise = cfg.get("ipo_guard_max_rise") or GUARD_MAX_RISE
    return HeldoutGuardCallback(rows, float(max_rise), bool(cfg.get("ipo_guard_stop")),
                                cfg.get("sequence_len"))
