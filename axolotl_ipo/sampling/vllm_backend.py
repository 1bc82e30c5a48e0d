"""Sampling with vLLM (``vllm.LLM``), one engine per process/GPU.

Importing this module never fails; constructing :class:`VLLMGenerator` without vLLM
or without a CUDA GPU raises a ``RuntimeError`` that names the config key and what to do.
Under a multi-process launch each rank's engine runs on that rank's GPU (``LOCAL_RANK``).

This module is also the vLLM adapter (`axolotl_ipo/upstream/`): every touch of vLLM is here,
``vllm.LLM`` and its ``generate``, ``SamplingParams``, the request outputs' ``text``,
``token_ids`` and ``finish_reason``, the engine's ``llm_engine.engine_core.shutdown`` (looked up
softly: freeing memory never fails a run) and the ``VLLM_ENABLE_V1_MULTIPROCESSING`` variable.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

from .base import Completion, SamplingSettings, derive_seed, stop_token_ids

__all__ = ["VLLMGenerator", "vllm_available"]

# The vLLM names used here ("module:attribute"); tests/test_upstream.py resolves each where vLLM
# is installed (an optional extra: the CPU test environments have none).
REQUIRED = ("vllm:LLM", "vllm:LLM.generate", "vllm:SamplingParams")


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _require_vllm() -> Any:
    if not vllm_available():
        raise RuntimeError(
            "rejection_sampling.backend: vllm needs vLLM, which is not installed: pip install "
            "'axolotl-ipo[vllm]' with your torch held (docs/gpu.md, \"Installing vLLM\"), or "
            "set `rejection_sampling.backend: transformers`"
        )
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            "rejection_sampling.backend: vllm needs a CUDA GPU and none is visible; set "
            "`rejection_sampling.backend: transformers` on this machine"
        )
    return importlib.import_module("vllm")


def rank_gpu_env() -> dict[str, str]:
    """Environment for this rank's vLLM engine under torchrun/accelerate (empty for 1 process).

    vLLM's engine process always uses the first visible GPU, so each rank shows it only its
    own (``LOCAL_RANK``-th visible device), and the engine runs in its own process (vLLM's
    default), which also gives all of its memory back when it shuts down."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return {}
    import torch

    torch.cuda.init()  # fix this process's own device numbering before the variable changes
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = (
        [d.strip() for d in visible.split(",") if d.strip()]
        if visible
        else [str(i) for i in range(torch.cuda.device_count())]
    )
    if local_rank >= len(devices):
        raise RuntimeError(
            f"rank with LOCAL_RANK={local_rank} has no GPU of its own ({len(devices)} visible); "
            "launch one process per GPU, or set `rejection_sampling.backend: transformers`"
        )
    return {"CUDA_VISIBLE_DEVICES": devices[local_rank], "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}


def _hf_tokenizer(path: str, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


@contextlib.contextmanager
def _environment(overrides: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class VLLMGenerator:
    """Samples with ``vllm.LLM.generate``. Each prompt gets its own seed derived from the
    batch seed and its position, so the random draws do not depend on vLLM's internal batching;
    the logits they are drawn from still can, unless vLLM runs batch-invariant
    (``VLLM_BATCH_INVARIANT=1``, docs/gpu.md).
    Prompts are passed as token ids (tokenized without special tokens, like the
    transformers backend), so a BOS is never added twice.

    Prompts are encoded with the checkpoint's Hugging Face tokenizer, the one the chat template
    rendered them for, and the engine runs with ``tokenizer_mode="hf"``: vLLM's default picks
    mistral-common's tokenizer for repos that ship Mistral's own format (consolidated weights
    plus ``tekken.json`` or ``tokenizer.model.v*``), which has no ``unk_token_id`` and does not
    read ``[INST]`` in rendered text as the control token."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        trust_remote_code: bool = False,
        **llm_kwargs: Any,
    ) -> None:
        vllm = _require_vllm()
        if tensor_parallel_size > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise RuntimeError(
                f"rejection_sampling.tensor_parallel_size: {tensor_parallel_size} needs a "
                "single-process launch (vLLM then starts one worker per GPU). Sample first with "
                "`axolotl-ipo sample CONFIG` (one process), then launch training, which reuses "
                "the pairs; or set `rejection_sampling.tensor_parallel_size: 1` to sample on "
                "every rank's GPU."
            )
        self._vllm = vllm
        self.model_path = os.fspath(model_path)
        self.name = f"vllm:{self.model_path}"
        kwargs: dict[str, Any] = {
            "model": self.model_path,
            "tokenizer": self.model_path,
            "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "tensor_parallel_size": tensor_parallel_size,
            "tokenizer_mode": "hf",
            "trust_remote_code": trust_remote_code,
            "seed": 0,
            **llm_kwargs,
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        with _environment(rank_gpu_env()):
            self.llm = vllm.LLM(**kwargs)
        self.tokenizer = _hf_tokenizer(kwargs["tokenizer"], trust_remote_code)

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
        """Shut the engine down (its process exits and frees the GPU) before training starts."""
        llm, self.llm = self.llm, None
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(engine_core, "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception:  # noqa: BLE001 - freeing memory must never fail the run
                pass
        del llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - freeing memory must never fail the run
            pass
