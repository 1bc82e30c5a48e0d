"""Batched sampling with ``transformers`` ``generate`` (CPU or one GPU per rank)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from axolotl_ipo.upstream.transformers import select_cache_rows, whole_model_loading

from .base import Completion, SamplingSettings, stop_token_ids
from .prefix import pad_rows, prefix_cache, shared_prefix_length

__all__ = ["TransformersGenerator"]

# Shorter shared prefixes are recomputed per row: a cache copy costs more than it saves.
MIN_SHARED_PREFIX = 4
# Finished rows leave the batch every this many new tokens (one `generate` call per segment).
DROP_FINISHED_EVERY = 8


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def default_device() -> str:
    """``cuda:LOCAL_RANK`` when CUDA is present, else ``cpu`` (the sampler and the evaluation)."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def resolve_dtype(dtype: Any, device: str) -> Any:
    """A torch dtype from a name (``auto``: bf16 on a GPU that supports it, else fp16; fp32 on
    CPU), shared by the sampler and the evaluation."""
    import torch

    if dtype not in (None, "auto"):
        return getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class TransformersGenerator:
    """Samples with ``model.generate``: left padding, KV cache, ``torch.inference_mode``.

    The generator is its own plain copy of the checkpoint in ``dtype`` (``auto``: bf16 on a GPU
    that supports it, else fp16; fp32 on CPU), on ``cuda:LOCAL_RANK`` when CUDA is present: never
    the training model, so a QLoRA run samples from full-precision weights, not 4-bit ones.

    Prompts are tokenized without special tokens (the chat template already rendered
    them). The tokens a batch's prompts all start with (a chat template's system prompt) run
    once per generator, not once per row (``share_prefix``; the model's outputs are the same
    up to float rounding).
    Sampling parameters come only from :class:`SamplingSettings`; the checkpoint's
    ``generation_config.json`` defaults (top_k, repetition_penalty, ...) are not applied,
    only its EOS ids are kept as stop tokens.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        device: str | None = None,
        dtype: Any = "auto",
        trust_remote_code: bool = False,
        share_prefix: bool = True,
        inverse_cdf: bool = True,
        drop_finished: bool = True,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path = os.fspath(model_path)
        self.name = f"transformers:{self.model_path}"
        self.device = device or default_device()
        tokenizer = AutoTokenizer.from_pretrained(
            self.model_path,
            padding_side="left",
            trust_remote_code=trust_remote_code,
        )
        kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, self.device)}
        if self.device.startswith("cuda"):  # straight onto the GPU, no full copy in host RAM
            kwargs["device_map"] = {"": self.device}
        with whole_model_loading():
            model = AutoModelForCausalLM.from_pretrained(
                self.model_path, trust_remote_code=trust_remote_code, **kwargs
            )
        self._attach(model.to(self.device), tokenizer, share_prefix)
        self.inverse_cdf = inverse_cdf
        self.drop_finished = drop_finished

    @classmethod
    def from_model(
        cls, model: Any, tokenizer: Any, name: str, *, share_prefix: bool = True
    ) -> TransformersGenerator:
        """Wrap a model that is already loaded (e.g. a PEFT model under evaluation)."""
        self = cls.__new__(cls)
        self.model_path = name
        self.name = f"transformers:{name}"
        self.device = str(next(model.parameters()).device)
        self._attach(model, tokenizer, share_prefix)
        self.inverse_cdf = True
        self.drop_finished = True
        return self

    def _attach(self, model: Any, tokenizer: Any, share_prefix: bool) -> None:
        """Use ``model`` and ``tokenizer`` without changing them (``from_model`` wraps the
        caller's): rows are left-padded here, with the pad id kept on the generator."""
        import torch
        from transformers import GenerationConfig

        self.tokenizer = tokenizer
        pad = tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else _as_list(tokenizer.eos_token_id)[0]
        self.model = model.eval()
        self._eos_ids = _as_list(self.tokenizer.eos_token_id) + [
            i
            for i in _as_list(getattr(self.model.generation_config, "eos_token_id", None))
            if i != self.tokenizer.eos_token_id
        ]
        # Checkpoint sampling defaults would be merged into ours by generate(): while sampling,
        # the model's generation config is this one (see _own_config).
        self._base_config = GenerationConfig(eos_token_id=self._eos_ids, pad_token_id=self._pad_id)
        self._torch = torch
        self.share_prefix = share_prefix
        self._prefix: tuple[tuple[int, ...], Any] | None = None

    def stop_ids(self, settings: SamplingSettings) -> list[int]:
        ids = stop_token_ids(self.tokenizer, self._eos_ids, settings.stop_tokens, self.model_path)
        if not ids:
            raise ValueError(
                f"the generator's tokenizer ({self.model_path}) has no EOS token; "
                "set stop_tokens in the sampling settings"
            )
        return ids

    def _generation_config(self, settings: SamplingSettings, stop: list[int], tokens: int) -> Any:
        """Greedy decoding of ``tokens`` new tokens, also when sampling with the inverse-CDF draw
        (the last logits processor, :meth:`_processors`); the checkpoint's defaults never apply."""
        from transformers import GenerationConfig

        common = {
            "max_new_tokens": tokens,
            "return_dict_in_generate": True,
            "eos_token_id": stop,
            "pad_token_id": self._pad_id,
            "use_cache": True,
        }
        if settings.greedy or self.inverse_cdf:
            return GenerationConfig(do_sample=False, **common)
        return GenerationConfig(  # torch.multinomial's draw (kept for the profile's "before")
            do_sample=True,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=0,  # unset would mean transformers' default top_k=50
            **common,
        )

    def _processors(self, settings: SamplingSettings) -> Any:
        """None for greedy decoding (or ``inverse_cdf=False``); else temperature, top-p and an
        inverse-CDF draw: the distribution of ``do_sample=True`` with ``top_k=0``, without
        ``torch.multinomial``'s one exponential per vocabulary entry and row."""
        if settings.greedy or not self.inverse_cdf:
            return None
        from .inverse_cdf import sampling_processors

        return sampling_processors(settings.temperature, settings.top_p)

    def _encode(self, prompts: list[str]) -> tuple[Any, Any, Any]:
        """(input ids, attention mask, KV cache or None) for ``generate``. Prompts that start
        with the same tokens (a chat template's system prompt) share that prefix's KV cache,
        computed once per prefix: the ids are [prefix | left-padded tails], so each row keeps
        the positions it has alone (``generate`` derives them from the mask)."""
        torch = self._torch
        rows = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        shared = shared_prefix_length(rows) if self.share_prefix and len(rows) > 1 else 0
        if shared < MIN_SHARED_PREFIX:
            shared = 0
        tails, mask = pad_rows([r[shared:] for r in rows], self._pad_id, left=True)
        prefix = torch.tensor([rows[0][:shared]] * len(rows), dtype=torch.long)
        ids = torch.cat([prefix, tails], -1).to(self.device)
        mask = torch.cat([torch.ones_like(prefix), mask], -1).to(self.device)
        if not shared:
            return ids, mask, None
        index = torch.zeros(len(rows), dtype=torch.long, device=self.device)
        cache = select_cache_rows(self._prefix_cache(tuple(rows[0][:shared])), index, copy=True)
        return ids, mask, cache

    def _prefix_cache(self, prefix: tuple[int, ...]) -> Any:
        """The KV cache of one row of ``prefix`` (the last one asked for is kept)."""
        if self._prefix is None or self._prefix[0] != prefix:
            self._prefix = (prefix, prefix_cache(self.model, prefix))
        return self._prefix[1]

    def generate(
        self, prompts: list[str], settings: SamplingSettings, seed: int
    ) -> list[Completion]:
        if not prompts:
            return []
        torch = self._torch
        stop = self.stop_ids(settings)
        ids, mask, cache = self._encode(list(prompts))
        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.inference_mode(), torch.random.fork_rng(devices=devices), self._own_config():
            torch.manual_seed(seed)
            new_tokens = self._decode(ids, mask, cache, settings, stop)
        return [self._completion(row, set(stop)) for row in new_tokens]

    @contextmanager
    def _own_config(self) -> Iterator[None]:
        """The model's generation config is the generator's own while it samples (no checkpoint
        defaults merged into the settings), and the caller's again afterwards."""
        saved = self.model.generation_config
        self.model.generation_config = self._base_config
        try:
            yield
        finally:
            self.model.generation_config = saved

    def _decode(self, ids, mask, cache, settings: SamplingSettings, stop: list[int]):
        """The new token ids of every row. ``generate`` runs in segments of
        ``DROP_FINISHED_EVERY`` tokens; after each, rows that produced a stop token leave the
        batch (their ids, mask and KV-cache rows are dropped) and the rest continue on their
        own cache, so a batch stops paying for answers that already ended. The sampler draws
        for the full batch at every step, so dropping rows leaves each row's answer as it was."""
        torch = self._torch
        width = ids.shape[0]
        new_tokens: list[list[int]] = [[] for _ in range(width)]
        active = list(range(width))
        left = settings.max_new_tokens
        stop_set = set(stop)
        processors = self._processors(settings)
        while active and left > 0:
            tokens = min(DROP_FINISHED_EVERY, left) if self.drop_finished else left
            if processors is not None and len(active) < width:  # the draw of the full batch
                processors[-1].keep_rows(width, active)
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                past_key_values=cache,
                generation_config=self._generation_config(settings, stop, tokens),
                logits_processor=processors,
            )
            made = out.sequences[:, ids.shape[1] :]
            left -= made.shape[1]
            keep = []
            for k, row in enumerate(made.tolist()):
                new_tokens[active[k]].extend(row)
                if not stop_set.intersection(row):
                    keep.append(k)
            ids, cache = out.sequences, out.past_key_values
            mask = torch.cat([mask, torch.ones_like(made)], -1)
            if keep and len(keep) < len(active) and left > 0:
                index = torch.tensor(keep, dtype=torch.long, device=ids.device)
                ids, mask, cache = ids[index], mask[index], select_cache_rows(cache, index)
            active = [active[k] for k in keep]
        return new_tokens

    def _completion(self, ids: list[int], stop: set[int]) -> Completion:
        """The text before the first stop token (or all of ``ids`` when none came)."""
        cut = next((i for i, t in enumerate(ids) if t in stop), None)
        text = self.tokenizer.decode(
            ids if cut is None else ids[:cut],
            skip_special_tokens=True,
            clean_up_tokenization_spaces=False,
        )
        return Completion(
            text=text,
            n_tokens=len(ids) if cut is None else cut + 1,
            finish_reason="length" if cut is None else "stop",
        )

    def close(self) -> None:
        self.model = None
        self._prefix = None
        gc.collect()
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()
