"""A config's SFT rows: which of the user's `datasets` entries are SFT data to sample from,
how to read them, and their rows as prompts with gold answers (the collapse guard's held-out
slice taken out).

The entries are the ones the user wrote (saved by `config.normalise` before Axolotl coerces
them to preference entries, which drops SFT-only keys such as `field_messages` mappings).
Everything that is not a recognised SFT format goes to Axolotl's preference loader unchanged.
A row's format is read by :mod:`axolotl_ipo.sft_rows`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axolotl_ipo.args import sampling_args
from axolotl_ipo.errors import UserError, one_line
from axolotl_ipo.heldout_guard import guard_size, split_heldout
from axolotl_ipo.preflight import dataset_problem
from axolotl_ipo.sft_rows import (
    ALLOWED_KEYS,
    CUSTOM,
    FORMATS,
    InvalidRow,
    PromptExample,
    extract_examples,
)
from axolotl_ipo.upstream.axolotl import custom_prompt_renderer, load_dataset_entry

# What Axolotl's custom format may put in each format string (str.format placeholders).
CUSTOM_PLACEHOLDERS = {
    "format": "{instruction} and {input}",
    "no_input_format": "{instruction}",
    "system_format": "{system}",
}
# Axolotl's SFT types without a prompt/answer split: nothing to sample a rejected answer for, and
# Axolotl's preference loader cannot read them either.
NO_GOLD_ANSWER = {
    "completion": "raw text in one column",
    "input_output": "text segments with label flags",
}


@dataclass(frozen=True)
class SFTSource:
    """One SFT dataset entry: where it is, which format, and how its fields are named."""

    index: int
    entry: dict[str, Any]
    fmt: str
    field_map: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"datasets[{self.index}] {self.entry.get('path')}"

    def renderer(self) -> Callable[[Mapping[str, Any]], str] | None:
        """Row -> prompt text for the custom format (Axolotl's own prompter), None for the
        formats rendered with the chat template. Format strings it cannot fill are one line."""
        if self.fmt != CUSTOM:
            return None
        render = custom_prompt_renderer(self.field_map)
        names = {key: self.field_map.get(f"field_{key}", key)
                 for key in ("instruction", "input", "system")}
        probes = ({names["instruction"]: "i", names["input"]: "x", names["system"]: "s"},
                  {names["instruction"]: "i"})
        try:
            for probe in probes:  # both format strings, with and without a system prompt
                render(probe)
        except (KeyError, IndexError, ValueError, AttributeError) as err:
            keys = ", ".join(f"{key}: {self.field_map[key]!r}" for key in CUSTOM_PLACEHOLDERS
                             if key in self.field_map)
            allowed = "; ".join(f"{k} {v}" for k, v in CUSTOM_PLACEHOLDERS.items())
            raise UserError(
                f"{self.name}: type.format / no_input_format / system_format ({keys}) cannot be "
                f"filled ({type(err).__name__}: {err}); the placeholders Axolotl fills are: "
                f"{allowed}."
            ) from None
        return render


def _sft_format(index: int, entry: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(format, field mapping) for an SFT entry, None for a preference entry."""
    ds_type = entry.get("type")
    if isinstance(ds_type, str) and ds_type in NO_GOLD_ANSWER:
        raise UserError(
            f"datasets[{index}] {entry.get('path')}: `type: {ds_type}` is "
            f"{NO_GOLD_ANSWER[ds_type]}, with no prompt and gold answer to pair a sampled answer "
            "with; for `rl: ipo` use `type: prompt_completion` (prompt and completion columns), "
            "alpaca or chat_template, or train this dataset without `rl: ipo`."
        )
    if isinstance(ds_type, dict):  # Axolotl's custom instruct format: field_instruction, ...
        if ds_type.get("field_chosen") or ds_type.get("field_rejected"):
            return None
        return CUSTOM, {key: value for key, value in ds_type.items()
                        if key in ALLOWED_KEYS[CUSTOM] and value is not None}
    if not isinstance(ds_type, str) or ds_type.split(":")[0] not in FORMATS:
        return None
    if entry.get("field_chosen") or entry.get("field_rejected"):
        return None  # Axolotl's DPO chat_template with chosen/rejected message fields
    fmt = ds_type.split(":")[0]
    return fmt, {key: entry[key] for key in ALLOWED_KEYS[fmt] if entry.get(key) is not None}


def split_sources(entries: list[dict[str, Any]]) -> tuple[list[SFTSource], list[int]]:
    """(SFT entries to sample from, indices of the entries to hand to Axolotl unchanged)."""
    sft, preference = [], []
    for index, entry in enumerate(entries):
        found = _sft_format(index, entry)
        if found is None:
            preference.append(index)
        else:
            sft.append(SFTSource(index, dict(entry), *found))
    return sft, preference


def refuse_sft_test_datasets(entries: list[Any] | None) -> None:
    """`test_datasets` reach Axolotl's preference loader as they are (only `datasets` entries
    are sampled into pairs): an SFT entry there, read as pairs it is not, is one line."""
    found, _ = split_sources([dict(entry) for entry in entries or []])
    if found:
        entry = found[0].entry
        raise UserError(
            f"test_datasets[{found[0].index}] {entry.get('path')}: `type: {entry.get('type')}` "
            "is an SFT format, but with `rl: ipo` evaluation reads preference pairs (prompt, "
            "chosen, rejected) and only `datasets` entries are sampled into pairs. Hold out "
            "sampled pairs with `val_set_size`, give a preference dataset here, or sample this "
            "one with `axolotl-ipo sample` and use its pairs.jsonl with `type: "
            "axolotl_ipo.sampled_pairs`."
        )


def _folder_problem(source: SFTSource, err: Exception) -> str | None:
    """A local directory Axolotl's loader could not read, with the loader's reason."""
    path = source.entry.get("path")
    if not isinstance(path, str) or not Path(path).expanduser().is_dir():
        return None
    return (
        f"{source.name}: a directory with no data files Axolotl's loader reads "
        f"({type(err).__name__}: {one_line(err)}); set `path` to a data file (.jsonl, .json, "
        ".parquet, .csv) or to a folder of them, or use `data_files:`."
    )


def load_rows(source: SFTSource, use_auth_token: bool = False):
    """The entry's rows as a `datasets.Dataset`, through Axolotl's own loader (local files,
    hub, cloud, URLs, data_files), so every `path:` form Axolotl accepts works here too."""
    from datasets import DatasetDict

    entry = {key: value for key, value in source.entry.items() if key != "type"}
    try:
        dataset = load_dataset_entry(entry, use_auth_token)
    except Exception as err:  # noqa: BLE001 - replaced by what is wrong with the file, if known
        problem = dataset_problem(source.name, source.entry.get("path")) or _folder_problem(
            source, err
        )
        if problem is None:
            raise
        raise UserError(problem) from err
    if isinstance(dataset, DatasetDict):
        dataset = dataset[source.entry.get("split") or "train"]
    return dataset


def user_datasets(cfg: Any) -> list[dict]:
    return list(cfg.get("ipo_sft_datasets") or cfg.get("datasets") or [])


def sft_sources(cfg: Any) -> tuple[list[SFTSource], list[int]]:
    return split_sources([dict(entry) for entry in user_datasets(cfg)])


def config_examples(
    cfg: Any, sources: list[SFTSource], strict: bool, answers_field: str | None = None
):
    """The (examples, invalid rows) of the given SFT sources, in dataset order."""
    examples: list[PromptExample] = []
    invalid = []
    for source in sources:
        rows = load_rows(source, bool(cfg.get("hf_use_auth_token")))
        found, bad = extract_examples(
            rows,
            source.fmt,
            source.name,
            source.field_map,
            strict=strict,
            answers_field=answers_field,
            render=source.renderer(),
        )
        examples.extend(found)
        invalid.extend(bad)
    if not examples:
        first = f" First: {invalid[0].message}" if invalid else ""
        raise UserError(
            f"no usable SFT rows in {', '.join(source.name for source in sources)} "
            f"({len(invalid)} invalid); fix the rows or the dataset's field mapping.{first}"
        )
    return examples, invalid


@dataclass(frozen=True)
class TrainingRows:
    """A config's SFT rows: those pairs are sampled for, the invalid ones, and the collapse
    guard's held-out slice (never sampled or trained on)."""

    examples: list[PromptExample]
    invalid: list[InvalidRow]
    heldout: list[PromptExample]


def training_rows(cfg: Any) -> TrainingRows | None:
    """The config's SFT rows with the guard's slice taken out (None: no SFT dataset)."""
    sources, _ = sft_sources(cfg)
    if not sources:
        return None
    args = sampling_args(cfg)
    examples, invalid = config_examples(cfg, sources, args.strict, args.answers_field)
    size = guard_size(len(examples), cfg.get("ipo_guard_rows"))
    heldout, examples = split_heldout(examples, size, args.seed)
    return TrainingRows(examples, invalid, heldout)
