"""The build directory: one folder that holds every stage's output.

A dataset build is `index -> caption -> segment -> split -> export`; each stage reads
what earlier ones wrote here. This module is the single owner of the layout, so the
file names and the record-merging rule (the latest record of an image wins) live in
one place. See annotations/schema.md for the record formats.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from t2iverw.errors import T2IError
from t2iverw.storage import JsonlWriter, read_jsonl

IMAGES = "images.parquet"
BUILD_INFO = "build.json"
REJECTED = "rejected.jsonl"
SPLIT = "split.json"
CAPTIONS_GLOB = "captions*.jsonl"
PARTS_GLOB = "parts*.jsonl"


@dataclass(frozen=True)
class BuildDir:
    root: Path

    @classmethod
    def open(cls, root: str | Path) -> BuildDir:
        """An existing, indexed build directory, or a clear error saying how to make one."""
        root = Path(root)
        if not (root / IMAGES).exists():
            raise T2IError(f"{root} is not a build directory (no {IMAGES}); run `t2iverw index SOURCE --out {root}` first")
        return cls(root)

    # --- index -----------------------------------------------------------------
    @property
    def images_path(self) -> Path:
        return self.root / IMAGES

    def images(self, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.images_path, columns=columns)

    def info(self) -> dict:
        path = self.root / BUILD_INFO
        return json.loads(path.read_text()) if path.exists() else {}

    @property
    def source_root(self) -> Path:
        """Where the images are read from (the VERI-Wild root given to `index`)."""
        src = self.info().get("source_root")
        if not src:
            raise T2IError(f"{self.root / BUILD_INFO} names no source_root; re-run `t2iverw index`")
        return Path(src)

    def image_path(self, rel_path: str) -> Path:
        return self.source_root / rel_path

    # --- split -----------------------------------------------------------------
    @property
    def split_path(self) -> Path:
        return self.root / SPLIT

    def split(self) -> dict:
        if not self.split_path.exists():
            raise T2IError(f"{self.root} has no {SPLIT}; run `t2iverw split {self.root}` first")
        return json.loads(self.split_path.read_text())

    # --- record logs (caption, segment) ----------------------------------------
    def log_writer(self, stage: str, shard: tuple[int, int] | None = None) -> JsonlWriter:
        """Append-only log for `stage` ('captions' or 'parts'); one file per shard so shards never share a file."""
        suffix = "" if shard is None or shard[1] == 1 else f"-{shard[0]:05d}-of-{shard[1]:05d}"
        return JsonlWriter(self.root / f"{stage}{suffix}.jsonl")

    def latest_records(self, stage: str) -> dict[str, dict]:
        """image_id -> the latest record of `stage` across all its shard logs (later lines override earlier)."""
        latest: dict[str, dict] = {}
        for path in sorted(self.root.glob(f"{stage}*.jsonl")):
            for rec in read_jsonl(path):
                latest[rec["image_id"]] = rec
        return latest

    def captions(self) -> dict[str, dict]:
        """image_id -> caption record with status 'ok' (failed ones are not captions)."""
        return {k: r for k, r in self.latest_records("captions").items() if r.get("status") == "ok"}

    def parts(self) -> dict[str, dict]:
        """image_id -> part record with status 'ok'."""
        return {k: r for k, r in self.latest_records("parts").items() if r.get("status") == "ok"}
