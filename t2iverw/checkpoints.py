"""Which checkpoint a stage used, named so that the name means the same weights on every machine.

A hub id is named with the revision in the local Hugging Face cache. A local directory's
absolute path differs between nodes (and means nothing once the build moves), so it is
named by its folder name and a hash of its config and of its weight files' names and
sizes: copies of one checkpoint on two nodes get the same identity, a retrained one not.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def model_identity(model: str) -> dict:
    """{"model": name, "revision": commit or content hash or None} of a hub id or a local directory."""
    path = Path(model).expanduser()
    if path.is_dir():
        return {"model": path.resolve().name, "revision": _content_hash(path)}
    return {"model": model, "revision": _cached_revision(model)}


def _content_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    config = folder / "config.json"
    if config.exists():
        digest.update(config.read_bytes())
    for weight in sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES):
        digest.update(f"{weight.name}:{weight.stat().st_size}\n".encode())
    return "sha256:" + digest.hexdigest()[:16]


def _cached_revision(repo_id: str) -> str | None:
    """The commit of the cached snapshot holding the repo's config.json (None when it is not cached)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id or an odd cache: the revision is simply unknown
        return None
    if isinstance(found, str):
        parts = Path(found).parts
        if "snapshots" in parts:
            return parts[parts.index("snapshots") + 1]
    return None
