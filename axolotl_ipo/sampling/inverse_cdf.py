"""Categorical sampling for ``generate`` without ``torch.multinomial``.

On CPU ``torch.multinomial(probs, 1)`` draws one exponential variate per vocabulary entry and
row (``aten::exponential_``): about 11% of the sampler's time on a 49k vocabulary
(docs/sampling_profile.md). Inverse-CDF sampling draws one uniform per row instead: the token is
the first whose cumulative probability reaches it, which is exactly a draw from the same
categorical distribution. :class:`InverseCdfSampler` does that as the last logits processor and
leaves only the drawn token finite, so ``generate``'s greedy step picks it.
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
    """Draw one token per row from softmax(scores); return scores with only it finite."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        cdf = torch.softmax(scores.float(), -1).cumsum_(-1)
        # (0, total]: u = 0 could land on a leading zero-probability token
        u = (1.0 - torch.rand((scores.shape[0], 1), device=scores.device)) * cdf[:, -1:]
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
