"""Identity of a generator's weights, for cache keys (no model is loaded)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

__all__ = ["model_fingerprint"]

_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_SMALL = ("config.json", "generation_config.json")
_CHUNK = 1 << 20


def _sample_file(path: Path, size: int) -> str:
    """sha256 of the size plus 1 MiB at the start, middle and end (catches any two
    different checkpoints of the same architecture without reading gigabytes)."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        for offset in sorted({0, max(0, size // 2 - _CHUNK // 2), max(0, size - _CHUNK)}):
            handle.seek(offset)
            digest.update(handle.read(_CHUNK))
    return digest.hexdigest()


def model_fingerprint(model_path: str | os.PathLike, revision: str | None = None) -> dict[str, Any]:
    """A JSON-able identity for ``model_path``: for a local directory, the config files'
    hashes and a sampled hash of every weight file; for a hub id, the id and revision
    (pin a commit for a stable key)."""
    path = Path(model_path)
    if not path.is_dir():
        return {"id": os.fspath(model_path), "revision": revision}
    files: dict[str, str] = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        name = file.relative_to(path).as_posix()
        if file.name in _SMALL:
            files[name] = hashlib.sha256(file.read_bytes()).hexdigest()
        elif file.name.endswith(_WEIGHTS):
            files[name] = _sample_file(file, file.stat().st_size)
    if not any(n.endswith(_WEIGHTS) for n in files):
        raise ValueError(f"no weight files ({', '.join(_WEIGHTS)}) in {path}")
    return {"path": os.fspath(path.resolve()), "files": files}
