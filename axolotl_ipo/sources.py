"""Which of the user's `datasets` entries are SFT data to sample from, and how to read them.

The entries are the ones the user wrote (saved by `config.normalise` before Axolotl coerces
them to preference entries). Everything that is not a recognised SFT format is left to
Axolotl's own preference loader unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SFT_TYPES = {"alpaca": "alpaca", "chat_template": "messages", "sharegpt": "sharegpt"}


@dataclass(frozen=True)
class SFTSource:
    """One SFT dataset entry: where it is, which format, and how its fields are named."""

    index: int
    entry: dict[str, Any]
    fmt: str
    field_map: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        split = self.entry.get("split")
        return f"datasets[{self.index}] ({self.entry.get('path')}{':' + split if split else ''})"


def _field_map(entry: dict[str, Any], fmt: str) -> dict[str, Any]:
    if fmt == "messages":
        mappings = entry.get("message_property_mappings") or {}
        return {
            "field_messages": entry.get("field_messages") or "messages",
            "role": mappings.get("role", entry.get("message_field_role") or "role"),
            "content": mappings.get("content", entry.get("message_field_content") or "content"),
        }
    if fmt == "prompt_completion":
        custom = entry["type"]
        return {
            "field_prompt": custom.get("field_instruction") or custom.get("field_prompt"),
            "field_completion": custom.get("field_output") or custom.get("field_completion"),
            "field_system": custom.get("field_system"),
        }
    return {}


def _sft_format(entry: dict[str, Any]) -> str | None:
    ds_type = entry.get("type")
    if isinstance(ds_type, dict):
        has_prompt = ds_type.get("field_instruction") or ds_type.get("field_prompt")
        has_answer = ds_type.get("field_output") or ds_type.get("field_completion")
        preference = ds_type.get("field_chosen") or ds_type.get("field_rejected")
        return "prompt_completion" if has_prompt and has_answer and not preference else None
    if not isinstance(ds_type, str):
        return None
    if ds_type == "chat_template" and (entry.get("field_chosen") or entry.get("field_rejected")):
        return None  # Axolotl's DPO chat_template with chosen/rejected message fields
    return SFT_TYPES.get(ds_type.split(":")[0])


def split_sources(entries: list[dict[str, Any]]) -> tuple[list[SFTSource], list[dict[str, Any]]]:
    """(SFT entries to sample from, preference entries to hand to Axolotl unchanged)."""
    sft, preference = [], []
    for index, entry in enumerate(entries):
        fmt = _sft_format(entry)
        if fmt is None:
            preference.append(entry)
        else:
            sft.append(SFTSource(index, entry, fmt, _field_map(entry, fmt)))
    return sft, preference


def load_rows(source: SFTSource, use_auth_token: bool = False):
    """The entry's rows as a `datasets.Dataset`, through Axolotl's own loader (local files,
    hub, cloud, URLs, data_files), so every `path:` form Axolotl accepts works here too."""
    from axolotl.utils.data.shared import load_dataset_with_config
    from axolotl.utils.dict import DictDefault
    from datasets import DatasetDict

    entry = {key: value for key, value in source.entry.items() if key != "type"}
    dataset = load_dataset_with_config(DictDefault(entry), use_auth_token)
    if isinstance(dataset, DatasetDict):
        dataset = dataset[source.entry.get("split") or "train"]
    return dataset
