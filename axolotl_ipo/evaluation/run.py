"""Evaluate the base model and a trained one on a held-out split, for an Axolotl config.

The base model is IPO's reference, so its implicit-reward margins are 0 by definition and its
implicit-reward preference accuracy is 0.5 (ties count half). Its held-out scores and greedy
answers, and its scores of the training pairs, are cached under `dataset_prepared_path`, so
comparing several training runs evaluates it once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from axolotl_ipo.args import DEFAULT_BATCH_TOKENS
from axolotl_ipo.auto_tau import trained_tau
from axolotl_ipo.pairs.build import RenderedPrompt, real_pairs, sampling_plan
from axolotl_ipo.pairs.sampler import SamplingSettings, model_fingerprint
from axolotl_ipo.pairs.store import atomic_write, cache_key

from .heldout import HeldOut, load_heldout
from .metrics import (
    answer_words,
    contains_answer,
    gold_nll,
    implicit_margins,
    length_matched_contains,
    logprob_preference_accuracy,
    preference_accuracy,
    task_changes,
    task_scores,
)
from .scoring import DEFAULT_SCORE_BATCH, AnswerScore, score_answers

__all__ = ["EvalSettings", "ModelMetrics", "evaluate_config", "evaluate_model", "greedy_answers"]

LOG = logging.getLogger("axolotl_ipo.evaluation")


@dataclass(frozen=True)
class EvalSettings:
    max_new_tokens: int = 32  # greedy answers for the task score
    batch_size: int | None = None  # prompts per batch (answers per batch when scoring)
    batch_tokens: int | None = DEFAULT_BATCH_TOKENS  # greedy answers: KV-cache tokens per batch
    limit: int | None = None  # evaluate the first N held-out examples
    generate: bool = True  # False: skip the task score (scores only, much faster)
    dtype: str = "auto"  # both models' precision: auto = bf16 on a GPU, fp32 on CPU


@dataclass
class ModelMetrics:
    name: str
    preference_accuracy: float  # IPO implicit reward (token-averaged log-ratio to reference)
    logprob_preference_accuracy: float  # the model's own token-averaged log-probs
    implicit_margin: float  # mean implicit-reward margin, chosen - rejected
    gold_nll: float  # per gold-answer token
    task_contains: float | None  # greedy answer contains a gold answer (whole words)
    task_exact: float | None  # greedy answer equals a gold answer
    task_f1: float | None  # SQuAD token F1 of the greedy answer
    answer_words: float | None  # mean greedy answer length in words
    # the base model's greedy answers cut to this model's answer lengths: contains-answer
    task_contains_base_same_length: float | None
    n_prompts: int
    n_pairs: int
    seconds: float


@dataclass
class _Scores:
    gold: list[AnswerScore]
    rejected: list[AnswerScore]
    predictions: list[str] | None

    def to_json(self) -> dict:
        return {
            "gold": _as_json(self.gold),
            "rejected": _as_json(self.rejected),
            "predictions": self.predictions,
        }

    @classmethod
    def from_json(cls, data: dict) -> _Scores:
        return cls(_from_json(data["gold"]), _from_json(data["rejected"]), data["predictions"])


def greedy_answers(
    model: Any,
    tokenizer: Any,
    prompts: list[RenderedPrompt],
    max_new_tokens: int,
    batch_size: int | None = None,
    batch_tokens: int | None = DEFAULT_BATCH_TOKENS,
) -> list[str]:
    """Greedy answers to rendered prompts, batched by length through the project's sampler
    (the caps of :func:`sampling_plan`), ending at the tokenizer's EOS; in the prompts' order."""
    from tqdm.auto import tqdm

    from axolotl_ipo.pairs.sampler.transformers_backend import TransformersGenerator

    generator = TransformersGenerator.from_model(model, tokenizer, "eval")
    sampling = SamplingSettings(
        max_new_tokens=max_new_tokens,
        temperature=0.0,
        batch_size=batch_size,
        batch_tokens=batch_tokens,
        stop_tokens=(tokenizer.eos_token,),
    )
    predictions = [""] * len(prompts)
    with tqdm(total=len(prompts), desc="greedy answers", unit="prompt") as bar:
        for batch in sampling_plan([p.n_tokens for p in prompts], sampling):
            texts = [prompts[i].text for i in batch]
            for i, completion in zip(batch, generator.generate(texts, sampling, 0), strict=True):
                predictions[i] = completion.text
            bar.update(len(batch))
    generator.close()
    return predictions


def _score(model: Any, tokenizer: Any, held: HeldOut, settings: EvalSettings, max_length):
    """Gold answers and sampled ones in one call, so each prompt runs once for both."""
    prompts = [p.text for p in held.prompts]
    scores = score_answers(
        model,
        tokenizer,
        prompts + [prompts[i] for i, _ in held.pairs],
        held.golds + [text for _, text in held.pairs],
        batch_size=settings.batch_size or DEFAULT_SCORE_BATCH,
        max_length=max_length,
    )
    predictions = (
        greedy_answers(
            model, tokenizer, held.prompts, settings.max_new_tokens, settings.batch_size,
            settings.batch_tokens,
        )
        if settings.generate
        else None
    )
    return _Scores(scores[: len(prompts)], scores[len(prompts) :], predictions)


def _metrics(name: str, policy: _Scores, ref: _Scores, held: HeldOut, seconds: float):
    chosen_p = [policy.gold[i] for i, _ in held.pairs]
    chosen_r = [ref.gold[i] for i, _ in held.pairs]
    margins = implicit_margins(chosen_p, policy.rejected, chosen_r, ref.rejected)
    task = dict.fromkeys(
        ("task_contains", "task_exact", "task_f1", "answer_words", "task_contains_base_same_length")
    )
    if policy.predictions is not None:
        task.update(task_scores(policy.predictions, held.answers))
        task["answer_words"] = answer_words(policy.predictions)
        if policy is not ref and ref.predictions is not None:
            task["task_contains_base_same_length"] = length_matched_contains(
                ref.predictions, policy.predictions, held.answers
            )
    return ModelMetrics(
        name=name,
        preference_accuracy=preference_accuracy(margins),
        logprob_preference_accuracy=logprob_preference_accuracy(chosen_p, policy.rejected),
        implicit_margin=sum(margins) / len(margins) if margins else float("nan"),
        gold_nll=gold_nll(policy.gold),
        **task,
        n_prompts=len(held.prompts),
        n_pairs=len(held.pairs),
        seconds=round(seconds, 1),
    )


def _write_predictions(path: Path, held: HeldOut, scores: _Scores) -> None:
    if scores.predictions is None:
        return
    rows = [
        {"prompt": p.text, "answers": a, "prediction": pred, "contains": contains_answer(pred, a)}
        for p, a, pred in zip(held.prompts, held.answers, scores.predictions, strict=True)
    ]
    atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _training_pairs(cfg: Any, tokenizer: Any, limit: int = 256) -> list[dict]:
    """(Up to ``limit`` of) the pairs the config trained on, read from its complete pair store;
    [] when it trained on existing pairs or its pairs are not there (nothing is sampled)."""
    from axolotl_ipo.pairs.from_config import sampled_store
    from axolotl_ipo.sft_datasets import sft_sources

    if not sft_sources(cfg)[0]:
        return []  # it trained on existing preference pairs
    store = sampled_store(cfg, tokenizer)
    if store is None:
        LOG.warning(
            "no sampled pairs for this config's SFT datasets: the margins on the training "
            "pairs are left out; `axolotl-ipo sample CONFIG` builds them"
        )
        return []
    return real_pairs(store.read_pairs())[:limit]


def _pair_scores(model: Any, tokenizer: Any, pairs: list[dict], settings: EvalSettings, max_length):
    """(chosen scores, rejected scores) in one call, so each prompt runs once for both."""
    scores = score_answers(
        model,
        tokenizer,
        [row["prompt"] for row in pairs] * 2,
        [row["chosen"] for row in pairs] + [row["rejected"] for row in pairs],
        batch_size=settings.batch_size or DEFAULT_SCORE_BATCH,
        max_length=max_length,
    )
    return scores[: len(pairs)], scores[len(pairs) :]


def _cached(path: Path, compute: Callable[[], Any]) -> tuple[Any, bool]:
    """(``compute()``'s JSON-able result, False), stored at ``path``; (the stored one, True)
    when ``path`` exists."""
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8")), True
    data = compute()
    atomic_write(path, json.dumps(data))
    return data, False


def _as_json(scores: Sequence[AnswerScore]) -> list[list[float]]:
    return [[s.logp_sum, s.n_tokens] for s in scores]


def _from_json(rows: list[list[float]]) -> list[AnswerScore]:
    return [AnswerScore(logp, int(n)) for logp, n in rows]


def _train_margins(ref: tuple, policy: tuple, tau: float | None) -> dict[str, Any]:
    margins = implicit_margins(policy[0], policy[1], ref[0], ref[1])
    return {
        "pairs": len(margins),
        "mean_margin": sum(margins) / len(margins),
        "target_margin": 1.0 / (2.0 * tau) if tau else None,
        "preference_accuracy": preference_accuracy(margins),
    }


class _BaseModel:
    """The base model, loaded the first time something needs it (never when all its scores
    are cached and nothing is trained)."""

    def __init__(self, cfg: Any, dtype: str = "auto") -> None:
        self.path, self.trust = cfg.get("base_model"), bool(cfg.get("trust_remote_code"))
        self.dtype = dtype
        self.model: Any = None

    def get(self) -> Any:
        from .models import load_base

        if self.model is None:
            self.model = load_base(self.path, self.trust, self.dtype)
        return self.model


def _base_heldout(cfg, held: HeldOut, tokenizer, settings: EvalSettings, cache_dir, base):
    """The base model's held-out scores and greedy answers, cached under ``cache_dir``."""
    max_length = cfg.get("sequence_len")
    key = cache_key(
        {
            "base": model_fingerprint(cfg.get("base_model")),
            "pairs": held.pairs_path.read_text(encoding="utf-8"),
            "golds": held.golds,
            "prompts": [p.text for p in held.prompts],
            "settings": asdict(settings),
            "max_length": max_length,
        }
    )
    path = cache_dir / f"base-{key[:20]}.json"
    data, hit = _cached(
        path, lambda: _score(base.get(), tokenizer, held, settings, max_length).to_json()
    )
    if hit:
        print(f"base model scores: cached ({path})", flush=True)
    return _Scores.from_json(data)


def _base_training_pairs(cfg, pairs: list[dict], tokenizer, settings, cache_dir, base):
    """The base model's (reference) scores of the training pairs, cached under ``cache_dir``."""
    max_length = cfg.get("sequence_len")
    key = cache_key(
        {"base": model_fingerprint(cfg.get("base_model")), "pairs": pairs, "max_length": max_length}
    )
    path = cache_dir / f"base-train-{key[:20]}.json"
    data, hit = _cached(
        path,
        lambda: [
            _as_json(s) for s in _pair_scores(base.get(), tokenizer, pairs, settings, max_length)
        ],
    )
    if hit:
        print(f"base model scores of the training pairs: cached ({path})", flush=True)
    return _from_json(data[0]), _from_json(data[1])


def evaluate_model(
    cfg: Any,
    held: HeldOut,
    tokenizer: Any,
    trained: str | Path | None,
    settings: EvalSettings,
    cache_dir: Path,
    out_dir: Path,
) -> tuple[list[ModelMetrics], dict[str, Any] | None, dict[str, dict] | None]:
    """Metrics of the base model and (if given) the trained one, base scores cached; the
    trained model's token-averaged log-ratio margins on (up to 256 of) its training pairs; and
    the task scores' changes with paired bootstrap intervals."""
    from .models import load_trained

    base_model = _BaseModel(cfg, settings.dtype)
    max_length = cfg.get("sequence_len")
    started = time.perf_counter()
    base = _base_heldout(cfg, held, tokenizer, settings, cache_dir, base_model)
    results = [_metrics("base", base, base, held, time.perf_counter() - started)]
    _write_predictions(out_dir / "predictions_base.jsonl", held, base)
    if trained is None:
        return results, None, None
    started = time.perf_counter()
    train_pairs = _training_pairs(cfg, tokenizer)
    train_ref = (
        _base_training_pairs(cfg, train_pairs, tokenizer, settings, cache_dir, base_model)
        if train_pairs
        else None
    )
    policy_model = load_trained(base_model.get(), trained, base_model.trust, settings.dtype)
    policy = _score(policy_model, tokenizer, held, settings, max_length)
    results.append(_metrics("trained", policy, base, held, time.perf_counter() - started))
    changes = None
    if base.predictions is not None and policy.predictions is not None:
        changes = task_changes(base.predictions, policy.predictions, held.answers)
    _write_predictions(out_dir / "predictions_trained.jsonl", held, policy)
    train = None
    if train_ref is not None:
        train_policy = _pair_scores(policy_model, tokenizer, train_pairs, settings, max_length)
        train = _train_margins(train_ref, train_policy, trained_tau(cfg))
    return results, train, changes


def evaluate_config(
    cfg: Any,
    heldout_entry: dict[str, Any],
    trained: str | Path | None,
    out_dir: Path,
    settings: EvalSettings,
) -> dict[str, Any]:
    """The whole evaluation of a config: held-out pairs, both models, curves, JSON."""
    from axolotl_ipo.upstream.axolotl import load_tokenizer

    from .curves import read_curves

    prepared = Path(cfg.get("dataset_prepared_path") or "last_run_prepared")
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(cfg)
    held = load_heldout(
        cfg,
        heldout_entry,
        tokenizer,
        prepared / "ipo_heldout_pairs",
        limit=settings.limit,
    )
    if not held.pairs:
        raise ValueError(
            f"no held-out pairs: every sampled answer equalled its gold answer or was empty "
            f"({held.pairs_path})"
        )
    results, train, changes = evaluate_model(
        cfg, held, tokenizer, trained, settings, prepared / "ipo_eval_base", out_dir
    )
    curves = read_curves(cfg.get("output_dir")) if trained is not None else None
    report = {
        "config": {
            "base_model": cfg.get("base_model"),
            "output_dir": cfg.get("output_dir"),
            "ipo_tau": trained_tau(cfg) if trained is not None else cfg.get("ipo_tau"),
            "trained": str(trained) if trained is not None else None,
        },
        "heldout": {
            "data": heldout_entry,
            "prompts": len(held.prompts),
            "pairs": len(held.pairs),
            "invalid_rows": held.invalid_rows,
            "pairs_path": str(held.pairs_path),
        },
        "settings": asdict(settings),
        "models": {m.name: asdict(m) for m in results},
        "task_changes": changes,
        "training_pairs": train,
        "curves": curves.to_dict() if curves else None,
    }
    atomic_write(out_dir / "metrics.json", json.dumps(report, indent=2) + "\n")
    return report
