"""Categorical sampling for ``generate`` without ``torch.multinomial``.

On CPU ``torch.multinomial(probs, 1)`` draws one exponential variate per vocabulary entry and
row (``aten::exponential_``): about 11% of the sampler's time on a 49k vocabulary
(benchmarks/results/sampling_profile.md). Inverse-CDF sampling draws one uniform per row
instead: the token is the first whose cumulative probability reaches it, which is exactly a draw
from the same categorical distribution. :class:`InverseCdfSampler` does that as the last logits
processor and leaves only the drawn token finite, so ``generate``'s greedy step picks it.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

__all__ = ["InverseCdfSampler", "sampling_processors"]


class InverseCdfSampler(LogitsProcessor):
    """Draw one token per row from softmax(scores); return scores with only it finite.

    Each step draws one uniform per row of the batch as it started (``width``); after rows
    left it (:meth:`keep_rows`), the remaining rows take their own uniforms from that draw, so
    every row sees the random stream it would have seen had no row left."""

    def __init__(self) -> None:
        self.width: int | None = None
        self.rows: torch.Tensor | None = None

    def keep_rows(self, width: int, rows: list[int]) -> None:
        """The scores' rows are rows ``rows`` of a batch of ``width``."""
        self.width, self.rows = width, torch.tensor(rows, dtype=torch.long)

    def _uniforms(self, n: int, device: torch.device) -> torch.Tensor:
        if self.rows is None:
            return torch.rand((n, 1), device=device)
        return torch.rand((self.width, 1), device=device)[self.rows.to(device)]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        cdf = torch.softmax(scores.float(), -1).cumsum_(-1)
        # (0, total]: u = 0 could land on a leading zero-probability token
        u = (1.0 - self._uniforms(scores.shape[0], scores.device)) * cdf[:, -1:]
        tokens = torch.searchsorted(cdf, u).clamp_(max=scores.shape[-1] - 1)
        picked = torch.full_like(scores, float("-inf"))
        return picked.scatter_(1, tokens, 0.0)


def sampling_processors(temperature: float, top_p: float) -> Any:
    """Temperature, nucleus (when ``top_p`` < 1) and the draw, for ``generate`` run greedily:
    the same distribution as ``do_sample=True`` with these settings and ``top_k=0``."""
    processors = [TemperatureLogitsWarper(temperature)]
    if top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    return LogitsProcessorList([*processors, InverseCdfSampler()])
