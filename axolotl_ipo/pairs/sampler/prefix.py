"""Token-level helpers for running a batch of prompts that share a prefix (a chat template's
system prompt) over one KV cache of that prefix: the generator and the evaluation's scorer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["pad_rows", "prefix_cache", "shared_prefix_length"]


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving at least one token of each prompt."""
    if not prompts:
        return 0
    n = 0
    for tokens in zip(*prompts, strict=False):  # stops at the shortest prompt
        if any(t != tokens[0] for t in tokens):
            break
        n += 1
    return max(0, min(n, min(map(len, prompts)) - 1))


def prefix_cache(model: Any, prefix: Sequence[int]) -> Any:
    """The KV cache of one row of ``prefix`` under ``model`` (no gradients, last logits only)."""
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor([list(prefix)], dtype=torch.long, device=device)
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, left: bool) -> tuple[Any, Any]:
    """(ids, attention mask) of ``rows`` padded to the longest, on the left or the right."""
    import torch

    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        cols = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, cols] = torch.tensor(row, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask
