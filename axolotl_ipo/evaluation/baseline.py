"""`axolotl-ipo eval CONFIG --baseline RUN`: the config's trained run against another trained
run (say the user's plain SFT run) on the same held-out SFT rows, judged by an answer check.

Each run is loaded alone (an adapter merged into a fresh load of its base model), scores the
gold answers and answers greedily, and is freed before the next one is loaded."""

from __future__ import annotations

import gc
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from axolotl_ipo.errors import UserError
from axolotl_ipo.pairs.checks import load_check
from axolotl_ipo.pairs.judge import strip_end
from axolotl_ipo.pairs.store import atomic_write

from .compare import compare, judge, reading, run_metrics
from .heldout import HeldOutRows, read_heldout
from .models import load_run
from .run import EvalSettings, greedy_answers
from .runs import TrainedRun, check_tokenizer
from .scoring import DEFAULT_SCORE_BATCH, score_answers

__all__ = ["compare_runs"]

RUN_NAMES = ("run", "baseline")


def _evaluate(cfg: Any, trained: TrainedRun, rows: HeldOutRows, tokenizer: Any,
              settings: EvalSettings) -> tuple[list, list[str]]:
    """(gold-answer scores, greedy answers without their end token) of one run."""
    model = load_run(
        trained.path, trained.base_model, bool(cfg.get("trust_remote_code")), settings.dtype
    )
    gold = score_answers(
        model,
        tokenizer,
        [p.text for p in rows.prompts],
        rows.golds,
        batch_size=settings.batch_size or DEFAULT_SCORE_BATCH,
        max_length=cfg.get("sequence_len"),
    )
    answers = greedy_answers(
        model, tokenizer, rows.prompts, settings.max_new_tokens, settings.batch_size,
        settings.batch_tokens,
    )
    return gold, [strip_end(text, tokenizer.eos_token) for text in answers]


def _write_predictions(path: Path, rows: HeldOutRows, predictions: list[str], verdicts) -> None:
    lines = [
        json.dumps({"prompt": p.text, "answers": a, "prediction": pred, "right": right},
                   ensure_ascii=False) + "\n"
        for p, a, pred, right in zip(rows.prompts, rows.answers, predictions, verdicts,
                                     strict=True)
    ]
    atomic_write(path, "".join(lines))


def compare_runs(
    cfg: Any,
    heldout_entry: dict[str, Any],
    runs: dict[str, TrainedRun],
    check_name: str,
    out_dir: Path,
    settings: EvalSettings,
) -> dict[str, Any]:
    """The comparison of ``runs["run"]`` with ``runs["baseline"]``, written to
    ``out_dir/metrics.json`` (and each run's answers to ``predictions_<name>.jsonl``)."""
    from axolotl_ipo.upstream.axolotl import load_tokenizer

    check = load_check(check_name)
    tokenizer = load_tokenizer(cfg)
    for name, flag in zip(RUN_NAMES, ("the run", "--baseline"), strict=True):
        check_tokenizer(runs[name], tokenizer, flag, bool(cfg.get("trust_remote_code")))
    try:
        rows = read_heldout(cfg, heldout_entry, tokenizer, limit=settings.limit)
    except ValueError as err:  # e.g. a held-out type the plugin does not read as SFT rows
        raise UserError(f"--data: {err}") from None
    if not rows.prompts:
        raise UserError(
            f"--data {heldout_entry['path']}: no usable held-out row ({rows.invalid_rows} "
            "invalid or too long); give rows with a prompt and a gold answer"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    messages = [p.example.prompt_messages for p in rows.prompts]
    metrics, verdicts = {}, {}
    for name in RUN_NAMES:
        started = time.perf_counter()
        gold, predictions = _evaluate(cfg, runs[name], rows, tokenizer, settings)
        gc.collect()  # the run's model is gone before the next one loads
        verdicts[name] = judge(check, messages, rows.answers, predictions)
        metrics[name] = {
            "path": str(runs[name].path),
            "kind": runs[name].kind,
            "base_model": runs[name].base_model,
            **run_metrics(gold, predictions, verdicts[name]),
            "seconds": round(time.perf_counter() - started, 1),
        }
        _write_predictions(out_dir / f"predictions_{name}.jsonl", rows, predictions,
                           verdicts[name])
    difference = compare(metrics["run"], metrics["baseline"], verdicts["run"],
                         verdicts["baseline"])
    report = {
        "check": check_name,
        "heldout": {
            "data": heldout_entry,
            "prompts": len(rows.prompts),
            "invalid_rows": rows.invalid_rows,
        },
        "settings": asdict(settings),
        "runs": metrics,
        "difference": difference,
        "reading": reading(difference["accuracy"]),
    }
    atomic_write(out_dir / "metrics.json", json.dumps(report, indent=2) + "\n")
    return report
