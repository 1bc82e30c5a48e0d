"""What is wrong with a user's model path or dataset file, said before (or instead of) the
library error it would cause: "Repo id must be in the form ...", a bare StopIteration for an
empty file, "An error occurred while generating the dataset" for one malformed JSON line."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from axolotl_ipo.errors import UserError
from axolotl_ipo.jsonl import read_lines

JSON_SUFFIXES = (".json", ".jsonl")


def looks_local(path: str) -> bool:
    """A filesystem path, not a hub id (`name` or `namespace/name`)."""
    return (
        path.startswith(("/", "~", "."))
        or path.count("/") > 1
        or os.sep != "/" and os.sep in path
    )


def check_model_path(key: str, path: Any) -> None:
    """A local model folder that does not exist is named with its key, before anything loads."""
    if not isinstance(path, str) or not looks_local(path):
        return
    if not Path(path).expanduser().exists():
        raise UserError(
            f"{key}: {path} does not exist; give the folder of a Hugging Face model "
            "(with config.json) or a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct."
        )


def check_model_paths(cfg: Mapping[str, Any]) -> None:
    """`base_model` and `rejection_sampling.model` of a raw (not yet validated) config."""
    check_model_path("base_model", cfg.get("base_model"))
    sampling = cfg.get("rejection_sampling")
    if isinstance(sampling, Mapping):
        check_model_path("rejection_sampling.model", sampling.get("model"))


def _json_kind(value: Any) -> str:
    """JSON's name for a decoded value's type."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array"}.get(type(value), "null")


def _first_bad_json_line(path: Path) -> tuple[str, str] | None:
    """(problem, "line" or "item") for the first line of a JSON Lines file (item of a JSON
    array) that is not a JSON object; lines split on `\n` only, after any byte order mark."""
    not_row = "not an object with the row's columns"
    if path.suffix == ".json":
        try:
            document = json.loads(path.read_text(encoding="utf-8-sig", errors="replace"))
        except json.JSONDecodeError:
            document = None  # else JSON Lines, as Axolotl's loader also reads them
        if isinstance(document, list):
            for number, item in enumerate(document, start=1):
                if not isinstance(item, dict):
                    kind = _json_kind(item)
                    return f"item {number} of the JSON array is a JSON {kind}, {not_row}", "item"
            return None
        if document is not None:
            return None
    for number, line in read_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            return f"line {number} is not valid JSON ({err.msg} at column {err.colno})", "line"
        if not isinstance(row, dict):
            return f"line {number} is a JSON {_json_kind(row)}, {not_row}", "line"
    return None


def dataset_problem(name: str, path: Any) -> str | None:
    """Why a dataset file could not be loaded, or None when the file itself looks fine: what
    :func:`dataset_file_problem` finds, then a JSON line or item that is no row."""
    problem = dataset_file_problem(name, path)
    if problem is not None or not isinstance(path, str):
        return problem
    file = Path(path).expanduser()
    if file.is_file() and file.suffix in JSON_SUFFIXES:
        bad = _first_bad_json_line(file)
        if bad:
            problem, unit = bad
            return f"{name}: {problem}; fix or remove that {unit}."
    return None


def _blank(file: Path, chunk: int = 1 << 16) -> bool:
    """The file holds nothing but whitespace (read until the first other byte)."""
    with file.open("rb") as handle:
        while block := handle.read(chunk):
            if block.strip():
                return False
    return True


def dataset_file_problem(name: str, path: Any) -> str | None:
    """What `axolotl-ipo check` can tell cheaply about a dataset's local file: it is missing or
    empty (a hub id or a folder is not judged here)."""
    if not isinstance(path, str):
        return None
    file = Path(path).expanduser()
    if not file.exists():
        if looks_local(path) or file.suffix:
            return (
                f"{name}: no such file or directory; fix `path` (a relative path is read "
                f"from the directory you run in: {Path.cwd()})."
            )
        return None
    if file.is_file() and _blank(file):
        return f"{name}: the file is empty; add rows or remove this dataset entry."
    return None


def hub_dataset(path: Any) -> bool:
    """A `path:` that names a hub dataset (no local file or folder of that name)."""
    return isinstance(path, str) and not Path(path).expanduser().exists() and not (
        looks_local(path) or Path(path).suffix or "://" in path
    )


def check_function_problem(key: str, name: str, check: Any) -> str | None:
    """A user's answer check that cannot be called as fn(prompt_messages, gold, sample):
    every row would raise at sampling time and be skipped."""
    import inspect

    try:
        signature = inspect.signature(check)
    except (TypeError, ValueError):
        return None  # a builtin without a signature: cannot tell cheaply
    try:
        signature.bind([], [""], "")
    except TypeError as err:
        return (
            f"{key}: {name} cannot be called as {name.partition(':')[2]}(prompt_messages, gold, "
            f"sample) -> bool (its signature is {signature}: {err}); point it at a function "
            "with those three arguments."
        )
    return None


def deepspeed_file(key: str, value: Any) -> tuple[str, int | None]:
    """(the DeepSpeed config file, its ZeRO stage) of a `deepspeed:` value; a missing or
    unreadable file is a UserError naming the key."""
    if isinstance(value, Mapping):
        stage = (value.get("zero_optimization") or {}).get("stage")
        return "(inline)", stage
    file = Path(str(value)).expanduser()
    if not file.is_file():
        raise UserError(
            f"{key}: {value} is not a file; give the path of a DeepSpeed JSON config (a "
            f"relative path is read from the directory you run in: {Path.cwd()})."
        )
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" at line {err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        raise UserError(f"{key}: {value} is not valid JSON{where}; fix the file.") from None
    if not isinstance(config, dict):
        raise UserError(f"{key}: {value} is not a JSON object of DeepSpeed settings.")
    zero = config.get("zero_optimization")
    stage = zero.get("stage") if isinstance(zero, dict) else None
    if stage is not None and stage not in (0, 1, 2, 3):
        raise UserError(
            f"{key}: {value}: zero_optimization.stage is {stage!r}; use 0, 1, 2 or 3."
        )
    return str(value), stage
