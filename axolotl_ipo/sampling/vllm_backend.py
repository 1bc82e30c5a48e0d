"""Sampling with vLLM (``vllm.LLM``), one engine per process/GPU.

Importing this module never fails; constructing :class:`VLLMGenerator` without vLLM
or without a CUDA GPU raises a ``RuntimeError`` that says what to do.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
from typing import Any

from .base import Completion, SamplingSettings, derive_seed, stop_token_ids

__all__ = ["VLLMGenerator", "vllm_available"]


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _require_vllm() -> Any:
    if not vllm_available():
        raise RuntimeError(
            "the 'vllm' sampler needs vLLM, which is not installed: pip install vllm "
            "(or pip install 'axolotl-ipo[vllm]'), or use the 'transformers' sampler"
        )
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            "the 'vllm' sampler needs a CUDA GPU and none is visible; "
            "use the 'transformers' sampler on this machine"
        )
    return importlib.import_module("vllm")


class VLLMGenerator:
    """Samples with ``vllm.LLM.generate``. Each prompt gets its own seed derived from the
    batch seed and its position, so results do not depend on vLLM's internal batching.
    Prompts are passed as token ids (tokenized without special tokens, like the
    transformers backend), so a BOS is never added twice."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        tokenizer_path: str | os.PathLike | None = None,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        trust_remote_code: bool = False,
        **llm_kwargs: Any,
    ) -> None:
        vllm = _require_vllm()
        self._vllm = vllm
        self.model_path = os.fspath(model_path)
        self.name = f"vllm:{self.model_path}"
        kwargs: dict[str, Any] = {
            "model": self.model_path,
            "tokenizer": os.fspath(tokenizer_path or model_path),
            "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "trust_remote_code": trust_remote_code,
            "seed": 0,
            **llm_kwargs,
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        self.llm = vllm.LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def stop_ids(self, settings: SamplingSettings) -> list[int]:
        eos = self.tokenizer.eos_token_id
        eos_ids = [] if eos is None else [int(eos)]
        return stop_token_ids(self.tokenizer, eos_ids, settings.stop_tokens, self.model_path)

    def generate(
        self, prompts: list[str], settings: SamplingSettings, seed: int
    ) -> list[Completion]:
        if not prompts:
            return []
        stop = self.stop_ids(settings)
        params = [
            self._vllm.SamplingParams(
                n=1,
                temperature=settings.temperature,
                top_p=settings.top_p,
                max_tokens=settings.max_new_tokens,
                seed=derive_seed(seed, position),
                stop_token_ids=stop,
                skip_special_tokens=True,
            )
            for position in range(len(prompts))
        ]
        inputs = [
            {"prompt_token_ids": self.tokenizer(p, add_special_tokens=False)["input_ids"]}
            for p in prompts
        ]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        completions = []
        for out in outputs:
            first = out.outputs[0]
            completions.append(
                Completion(
                    text=first.text,
                    n_tokens=len(first.token_ids),
                    finish_reason="length" if first.finish_reason == "length" else "stop",
                )
            )
        return completions

    def close(self) -> None:
        """Best effort: vLLM does not always give all GPU memory back in-process."""
        self.llm = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - freeing memory must never fail the run
            pass
