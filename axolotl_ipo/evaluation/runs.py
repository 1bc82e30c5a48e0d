"""Which trained model a run names: an Axolotl `output_dir` (a LoRA/QLoRA adapter or a full or
merged model, a `checkpoint-N` folder in it too), or the YAML config that trained it, whose
`output_dir` and `base_model` are used (paths relative to the current directory, as Axolotl
reads them). An adapter's base model is its config's `base_model`, else the
`base_model_name_or_path` of its `adapter_config.json`. A run compared under a config must
have saved that config's tokenizer (or none)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from axolotl_ipo.errors import UserError

from .models import trained_kind

__all__ = ["TrainedRun", "check_tokenizer", "resolve_run", "run_in_folder"]

CONFIG_SUFFIXES = (".yml", ".yaml")


@dataclass(frozen=True)
class TrainedRun:
    path: Path  # the adapter or model folder
    kind: str  # "adapter" or "full"
    base_model: str | None  # what an adapter is merged into; None for a full model


def run_in_folder(folder: str | Path, base_model: str | None, flag: str) -> TrainedRun:
    """The trained model in ``folder``; ``base_model`` (from the run's config) wins over the
    adapter's own record of its base."""
    path = Path(folder)
    try:
        kind = trained_kind(path)
    except FileNotFoundError:
        raise UserError(
            f"{flag} {path}: holds neither a LoRA adapter (adapter_config.json) nor a model "
            "(config.json); pass a finished training run's output_dir, a checkpoint-N folder "
            "in it, or the run's YAML config"
        ) from None
    if kind == "full":
        return TrainedRun(path, kind, None)
    if not base_model:
        adapter_config = path / "adapter_config.json"
        try:
            base_model = json.loads(adapter_config.read_text(encoding="utf-8")).get(
                "base_model_name_or_path"
            )
        except (ValueError, AttributeError):
            base_model = None
        if not base_model:
            raise UserError(
                f"{flag} {adapter_config}: names no base_model_name_or_path; pass the run's "
                "YAML config instead, whose base_model is used"
            )
    return TrainedRun(path, kind, str(base_model))


def resolve_run(spec: str, flag: str) -> TrainedRun:
    """``spec`` (a run's output_dir or its YAML config) -> its trained model."""
    path = Path(spec)
    if path.is_dir():
        return run_in_folder(path, None, flag)
    if not path.exists():
        raise UserError(
            f"{flag} {path}: no such file or folder; pass a training run's output_dir or its "
            "YAML config"
        )
    if path.suffix not in CONFIG_SUFFIXES:
        raise UserError(
            f"{flag} {path}: neither a model folder nor a YAML config (.yml/.yaml); pass a "
            "training run's output_dir or its config"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{flag} {path}: not valid YAML{where}; fix the file") from None
    output_dir = raw.get("output_dir") if isinstance(raw, dict) else None
    if not output_dir:
        raise UserError(
            f"{flag} {path}: the config sets no output_dir; set it to where the run saved its "
            "model, or pass that folder"
        )
    return run_in_folder(output_dir, raw.get("base_model"), f"{flag} {path}: output_dir")


def check_tokenizer(run: TrainedRun, tokenizer: Any, flag: str, trust_remote_code: bool) -> None:
    """Refuse a run whose saved tokenizer (Axolotl saves it beside the weights) has another
    vocabulary than ``tokenizer``: its answers would be scored and decoded with the wrong ids."""
    if not (run.path / "tokenizer_config.json").is_file():
        return
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(run.path, trust_remote_code=trust_remote_code)
    if saved.get_vocab() != tokenizer.get_vocab():
        raise UserError(
            f"{flag} {run.path}: its tokenizer ({len(saved)} tokens) is not the config's "
            f"({len(tokenizer)} tokens); compare runs trained from the same base model and "
            "tokenizer"
        )
