"""The build directory: one folder that holds every stage's output.

A dataset build is `index -> caption -> segment -> split -> export`; each stage reads
what earlier ones wrote here. This module is the single owner of the layout; the record
logs of the model stages (`captions/`, `parts/`) are read and written through
`t2iverw.runner`, which owns their locking and ordering. See annotations/schema.md.

A build is portable: images are found through a source root that `--source-root` or
`T2IVERW_SOURCE_ROOT` override, and otherwise through the path `index` recorded, both as
given and relative to the build, so a build moved together with its source still works.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from t2iverw.errors import T2IError

IMAGES = "images.parquet"
BUILD_INFO = "build.json"
REJECTED = "rejected.jsonl"
SPLIT = "split.json"
SOURCE_ROOT_ENV = "T2IVERW_SOURCE_ROOT"


@dataclass(frozen=True)
class BuildDir:
    root: Path
    source_override: Path | None = None

    @classmethod
    def open(cls, root: str | Path, source_root: str | Path | None = None) -> BuildDir:
        """An existing, indexed build directory, or a clear error saying how to make one."""
        root = Path(root)
        if not (root / IMAGES).exists():
            raise T2IError(f"{root} is not a build directory (no {IMAGES}); run `t2iverw index SOURCE --out {root}` first")
        return cls(root, Path(source_root) if source_root else None)

    # --- index -----------------------------------------------------------------
    @property
    def images_path(self) -> Path:
        return self.root / IMAGES

    def images(self, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.images_path, columns=columns)

    @cached_property
    def image_shas(self) -> ImageShas:
        """image_id -> SHA-256 of its crop, read once per BuildDir: every log writer on this build
        stamps its records with them, and three writers open at once need one copy, not three."""
        return ImageShas(self.images(["image_id", "sha256"]))

    def info(self) -> dict:
        path = self.root / BUILD_INFO
        return json.loads(path.read_text()) if path.exists() else {}

    @cached_property
    def source_root(self) -> Path:
        """Where the images are read from: --source-root, $T2IVERW_SOURCE_ROOT, or what `index` recorded.

        Resolved once per BuildDir (every image path goes through it); a failure is not cached."""
        if self.source_override is not None:
            return _existing(self.source_override, "--source-root")
        if os.environ.get(SOURCE_ROOT_ENV):
            return _existing(Path(os.environ[SOURCE_ROOT_ENV]), f"${SOURCE_ROOT_ENV}")
        info = self.info()
        recorded = [Path(info["source_root"])] if info.get("source_root") else []
        if info.get("source_root_relative") is not None:
            recorded.append(self.root / info["source_root_relative"])
        for candidate in recorded:
            if candidate.is_dir():
                return candidate
        if not recorded:
            raise T2IError(f"{self.root / BUILD_INFO} names no source root; re-run `t2iverw index`")
        raise T2IError(f"the images of {self.root} are not at {recorded[0]} (recorded by `t2iverw index`); "
                       f"pass --source-root DIR or set {SOURCE_ROOT_ENV} to where the source is mounted here")

    def image_path(self, rel_path: str) -> Path:
        return self.source_root / rel_path

    def read_image(self, row: dict) -> bytes:
        """The image file of an index row (image_id, path, sha256), checked against the hash taken at index time."""
        import hashlib

        path = self.image_path(row["path"])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise T2IError(f"cannot read image {row['image_id']} at {path}: {exc.strerror or exc}") from None
        if hashlib.sha256(data).hexdigest() != row["sha256"]:
            raise T2IError(f"image {row['image_id']} at {path} changed since it was indexed; re-run `t2iverw index` "
                           "(or `import-release`)")
        return data

    # --- split -----------------------------------------------------------------
    @property
    def split_path(self) -> Path:
        return self.root / SPLIT

    def split(self) -> dict:
        if not self.split_path.exists():
            raise T2IError(f"{self.root} has no {SPLIT}; run `t2iverw split {self.root}` first")
        return json.loads(self.split_path.read_text())

    # --- record logs (caption, segment, release import, review) ---------------------
    def latest(self, stage: str, fields: tuple[str, ...] | None = None) -> dict[str, dict]:
        """image_id -> the latest record of `stage` ('captions', 'parts', 'release'), of any status
        (with `fields`: only those keys of each, see runner.records.latest)."""
        from t2iverw.runner.records import latest

        return latest(self.root, stage, fields)

    def captions(self, fields: tuple[str, ...] | None = None) -> dict[str, dict]:
        """image_id -> latest caption record, where it is ok (failed and rejected ones are not captions)."""
        return {k: r for k, r in self.latest("captions", fields).items() if r.get("status") == "ok"}

    def parts(self, fields: tuple[str, ...] | None = None) -> dict[str, dict]:
        """image_id -> latest part record, where it is ok."""
        return {k: r for k, r in self.latest("parts", fields).items() if r.get("status") == "ok"}


class ImageShas(Mapping[str, "str | None"]):
    """image_id -> sha256 held as two arrays, the ids sorted (numpy) and the hashes in that order (Arrow).

    A dict of 416k id and hash strings costs ~250 bytes an image; these arrays cost the
    characters, and a lookup is a binary search. A repeated id maps to its last row, as a
    dict built from the rows would; iteration is in id order.
    """

    def __init__(self, table: pa.Table):
        ids = np.asarray(table["image_id"].to_numpy(zero_copy_only=False), dtype=str)
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        last = np.ones(len(ids), bool)  # the last row of each run of equal ids
        last[:-1] = ids[1:] != ids[:-1]
        self._ids, order = ids[last], order[last]
        self._shas = table["sha256"].take(pa.array(order, pa.int64())).combine_chunks()

    def _row(self, image_id: object) -> int:
        if isinstance(image_id, str):
            row = int(np.searchsorted(self._ids, image_id))
            if row < len(self._ids) and self._ids[row] == image_id:
                return row
        raise KeyError(image_id)

    def __getitem__(self, image_id: str) -> str | None:
        return self._shas[self._row(image_id)].as_py()

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids.tolist())


def _existing(path: Path, given_by: str) -> Path:
    if not path.is_dir():
        raise T2IError(f"source root {path} (from {given_by}) is not a directory")
    return path
