"""The sampler interface: pre-rendered prompt strings in, completions out."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from axolotl_ipo.args import RejectionSamplingArgs

__all__ = ["Completion", "Generator", "SamplingSettings", "derive_seed"]


def _default(key: str) -> Any:
    """The default of `rejection_sampling.<key>`, declared once in :mod:`axolotl_ipo.args`."""
    return RejectionSamplingArgs.model_fields[key].default


@dataclass(frozen=True)
class SamplingSettings:
    """How rejected answers are sampled. Every field changes the output, so all of them
    belong in the cache key (:meth:`to_dict`).

    ``temperature == 0`` means greedy decoding. ``stop_tokens`` are extra token strings
    that end a completion besides the tokenizer's/model's EOS (e.g. ``<|im_end|>`` when
    the generator's EOS is ``<|endoftext|>``). A batch holds at most ``batch_size`` prompts and
    at most ``batch_tokens`` tokens of KV cache (:func:`axolotl_ipo.pairs.build.plan_batches`)."""

    max_new_tokens: int = _default("max_new_tokens")
    temperature: float = _default("temperature")
    top_p: float = _default("top_p")
    seed: int = _default("seed")
    batch_size: int | None = _default("batch_size")
    batch_tokens: int | None = _default("batch_tokens")
    stop_tokens: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        for key in ("batch_size", "batch_tokens"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be >= 1 or None, got {value}")
        if self.batch_size is None and self.batch_tokens is None:
            raise ValueError("batch_size and batch_tokens are both None: set at least one")
        object.__setattr__(self, "stop_tokens", tuple(self.stop_tokens))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["stop_tokens"] = list(self.stop_tokens)
        return data

    def batch_seed(self, batch_index: int) -> int:
        """The seed of global batch ``batch_index`` (independent of ranks)."""
        return derive_seed(self.seed, batch_index)

    def sample_seed(self, batch_index: int, round_index: int) -> int:
        """The seed of sampling round ``round_index`` of global batch ``batch_index`` (round 0
        is the batch seed, so one sample per prompt gives the same answers as before)."""
        if round_index == 0:
            return self.batch_seed(batch_index)
        return derive_seed(self.seed, batch_index, round_index)


def stop_token_ids(
    tokenizer: Any, eos_ids: list[int], stop_tokens: tuple[str, ...], model_path: Any
) -> list[int]:
    """The generator's EOS ids plus each extra stop token (which must be a single token)."""
    ids = list(eos_ids)
    unknown = getattr(tokenizer, "unk_token_id", None)  # not every tokenizer has one
    for token in stop_tokens:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == unknown:
            raise ValueError(
                f"stop token {token!r} is not a single token of the generator's tokenizer "
                f"({model_path}); use a token from its vocabulary"
            )
        if token_id not in ids:
            ids.append(int(token_id))
    return ids


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (sha256; stable across processes and platforms)."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


@dataclass(frozen=True)
class Completion:
    """One sampled answer: text without the prompt and without the stop token."""

    text: str
    n_tokens: int
    finish_reason: str = "stop"  # "stop" (hit a stop token) or "length" (max_new_tokens)


@runtime_checkable
class Generator(Protocol):
    """Samples one completion per prompt. ``name`` identifies it in pair provenance."""

    name: str

    def generate(
        self, prompts: list[str], settings: SamplingSettings, seed: int
    ) -> list[Completion]:
        """One completion per prompt, in order; ``seed`` seeds this call (one batch)."""
        ...

    def close(self) -> None:
        """Free the model (GPU memory) before training starts."""
        ...
