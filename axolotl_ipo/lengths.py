"""Which pairs Axolotl will find too long: its RL loader keeps a pair only if prompt + chosen
and prompt + rejected each fit in `sequence_len`, counting tokens without special tokens
(`axolotl.utils.data.rl._drop_long_sequences`, the same in 0.19 and 0.21); the rest it drops
(`excess_length_strategy: drop`, the default) or truncates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def count_too_long(rows: Sequence[Mapping[str, Any]], tokenizer: Any, sequence_len: Any) -> int:
    """How many pair rows exceed ``sequence_len`` as Axolotl measures them (0 without a limit)."""
    if not sequence_len or not rows:
        return 0

    def lengths(key: str) -> list[int]:
        texts = [str(row[key]) for row in rows]
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    prompt, chosen, rejected = lengths("prompt"), lengths("chosen"), lengths("rejected")
    limit = int(sequence_len)
    return sum(
        p + max(c, r) > limit for p, c, r in zip(prompt, chosen, rejected, strict=True)
    )
