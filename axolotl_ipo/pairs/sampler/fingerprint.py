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


def _cached_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit of ``repo_id`` at ``revision`` (default: main) that the local Hugging Face
    cache holds, the one a load would use offline; None when the cache has none."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id: nothing cached under it
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def model_fingerprint(model_path: str | os.PathLike, revision: str | None = None) -> dict[str, Any]:
    """A JSON-able identity for ``model_path``: for a local directory, the config files'
    hashes and a sampled hash of every weight file; for a hub id, the id, the revision and the
    commit the local HF cache holds for it (a model re-pushed under the same id is a new
    commit, so a new key; a model not cached yet is keyed by id and revision alone)."""
    path = Path(model_path)
    if not path.is_dir():
        commit = _cached_commit(os.fspath(model_path), revision)
        if commit is None:
            return {"id": os.fspath(model_path), "revision": revision}
        return {"id": os.fspath(model_path), "revision": revision or "main", "commit": commit}
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
