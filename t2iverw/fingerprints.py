"""Short content fingerprints of an export and of a config, so a run, a prediction or a cache names what made it.

A local export is fingerprinted from its Parquet shards: each shard's name, size and
footer (the Parquet footer holds every row group's offsets and column statistics, so a
changed row changes it) — reading a few KiB per shard, never the images. A copy of one
export on another machine gets the same fingerprint; a re-export with other captions
does not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

FOOTER_BYTES = 64 * 1024


def dataset_fingerprint(source: str | Path, split: str | None = None) -> str:
    """"sha256:<16 hex>" of a local export's shards (all, or one split's), or of a hub id and its cached revision."""
    root = Path(source)
    digest = hashlib.sha256()
    if (root / "data").is_dir():
        pattern = f"{split}-*.parquet" if split else "*.parquet"
        for shard in sorted((root / "data").glob(pattern)):
            size = shard.stat().st_size
            digest.update(f"{shard.name}:{size}\n".encode())
            with open(shard, "rb") as fh:
                fh.seek(max(0, size - FOOTER_BYTES))
                digest.update(fh.read())
    else:
        from t2iverw.checkpoints import model_identity

        digest.update(json.dumps([str(source), split, model_identity(str(source))["revision"]]).encode())
    return "sha256:" + digest.hexdigest()[:16]


def config_fingerprint(values: dict) -> str:
    """"sha256:<16 hex>" of a config's values (its name excluded: a renamed copy is the same config)."""
    body = {k: v for k, v in values.items() if k != "name"}
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]
