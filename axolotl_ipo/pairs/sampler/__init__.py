"""Samplers for rejected answers: a small interface and two backends."""

from __future__ import annotations

import os
from typing import Any

from .base import Completion, Generator, SamplingSettings, derive_seed
from .fingerprint import model_fingerprint

__all__ = [
    "BACKENDS",
    "Completion",
    "Generator",
    "SamplingSettings",
    "derive_seed",
    "load_generator",
    "model_fingerprint",
]

BACKENDS = ("transformers", "vllm")


def load_generator(name: str, model_path: str | os.PathLike, **opts: Any) -> Generator:
    """Build a sampler backend by name (``transformers`` or ``vllm``)."""
    if name == "transformers":
        from .transformers_backend import TransformersGenerator

        return TransformersGenerator(model_path, **opts)
    if name == "vllm":
        from .vllm_backend import VLLMGenerator

        return VLLMGenerator(model_path, **opts)
    raise ValueError(f"unknown sampler backend {name!r}; use one of {list(BACKENDS)}")
