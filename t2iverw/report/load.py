"""What a report reads, from a build directory or an export, in one shape.

A build and an export hold the same facts in different places (JSONL records and
`images.parquet`, or Parquet columns), so both are read into a `Dataset`: one pandas
row per image, the part grids as one numpy array, and the provenance. The statistics
and figures never ask where the data came from. An export is read column by column
and its images are never decoded here; only the gallery asks for a few images.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from PIL import Image

from t2iverw.build import IMAGES, BuildDir
from t2iverw.caption.qa import qa_flags
from t2iverw.constants import GRID, PARTS
from t2iverw.errors import T2IError
from t2iverw.export import caption_source, caption_texts
from t2iverw.grid import unpack_grid
from t2iverw.segment.masks import decode_rle

META = ("color", "type", "model")
EXPORT_COLUMNS = ("image_id", "vehicle_id", *META, "path", "captions", "caption_source", "caption_flags",
                  "part_grid", "part_masks")


@dataclass
class Dataset:
    """One row per image, plus the part grids of the segmented rows.

    `frame` columns: image_id, vehicle_id, split, color, type, model, path, texts (list of
    captions or None), caption_source, flags (list or None). `grids` is bool
    (segmented, parts, grid_h, grid_w) for the rows `grid_rows` of `frame`; `mask_area`
    is each part's share of the image pixels for the same rows (None without full masks).
    """

    kind: str  # "build" or "export"
    root: Path
    frame: pd.DataFrame
    grids: np.ndarray
    grid_rows: np.ndarray
    mask_area: np.ndarray | None
    provenance: dict = field(default_factory=dict)
    load_images: Callable[[list[str]], dict[str, Image.Image]] = lambda image_ids: {}
    load_masks: Callable[[str], list[np.ndarray] | None] = lambda image_id: None

    @property
    def grid_ids(self) -> list[str]:
        """Image ids of the segmented rows, in the order of `grids`."""
        return self.frame["image_id"].to_numpy()[self.grid_rows].tolist()


def load_dataset(path: str | Path, source_root: str | Path | None = None) -> Dataset:
    """A build directory (has images.parquet) or an export (has data/*.parquet)."""
    path = Path(path)
    if (path / IMAGES).exists():
        return _from_build(BuildDir.open(path, source_root))
    if sorted((path / "data").glob("*.parquet")):
        return _from_export(path)
    raise T2IError(f"{path} is neither a build directory (no {IMAGES}) nor an export (no data/*.parquet)")


def _missing_as_none(frame: pd.DataFrame, columns) -> pd.DataFrame:
    """Missing metadata as None: pandas 3's string columns hold NaN, which the QA rules read as text."""
    for c in columns:
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    return frame


# --- build directory ---------------------------------------------------------------
def _from_build(bd: BuildDir) -> Dataset:
    frame = _missing_as_none(bd.images(["image_id", "vehicle_id", *META, "path"]).to_pandas(), META)
    frame["split"] = _build_splits(bd, frame)
    captions, parts = bd.captions(), bd.parts()
    recs = [captions.get(i) for i in frame["image_id"]]
    frame["texts"] = [caption_texts(r) if r else None for r in recs]
    frame["caption_source"] = [caption_source(r) if r else None for r in recs]
    frame["flags"] = [qa_flags(r["text"], meta) if r else None  # today's rules, as the export's caption_flags
                      for r, meta in zip(recs, frame[list(META)].to_dict("records"))]

    ids = frame["image_id"].tolist()
    rows = np.array([i for i, image_id in enumerate(ids) if image_id in parts], dtype=np.int64)
    seg = [parts[ids[i]] for i in rows]
    grids = _unpack_records(seg)
    with_masks = bool(seg) and all(r.get("masks") for r in seg)
    area = _mask_shares([r["masks"] for r in seg]) if with_masks else None
    paths = dict(zip(frame["image_id"], frame["path"]))

    def load_images(image_ids: list[str]) -> dict[str, Image.Image]:
        try:
            root = bd.source_root
        except T2IError:  # the source is not mounted here: a report without a gallery is still a report
            return {}
        return {i: Image.open(root / paths[i]).convert("RGB") for i in image_ids}

    def load_masks(image_id: str) -> list[np.ndarray] | None:
        rec = parts.get(image_id)
        return [decode_rle(m) for m in rec["masks"]] if rec and rec.get("masks") else None

    return Dataset("build", bd.root, frame, grids, rows, area, _build_provenance(captions, parts),
                   load_images, load_masks)


def _build_splits(bd: BuildDir, frame: pd.DataFrame) -> list[str]:
    if not bd.split_path.exists():
        return ["unsplit"] * len(frame)
    split = bd.split()
    side = {v: name for name in ("train", "test") for v in split.get(f"{name}_ids", [])}
    return [side.get(v, "unsplit") for v in frame["vehicle_id"]]


def _unpack_records(records: list[dict]) -> np.ndarray:
    """Every record's six packed grids as one bool array, unpacked in one numpy call."""
    shapes = {tuple(r["grid"]["shape"]) for r in records}
    if len(shapes) > 1:
        raise T2IError(f"part records use different grid shapes {sorted(shapes)}; a report needs one grid")
    gh, gw = shapes.pop() if shapes else GRID
    if not records:
        return np.zeros((0, len(PARTS), gh, gw), dtype=bool)
    if (gh * gw) % 8:
        return np.array([[unpack_grid(c, (gh, gw)) for c in r["grid"]["cells"]] for r in records])
    packed = bytes.fromhex("".join(c for r in records for c in r["grid"]["cells"]))
    bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8))
    return bits.reshape(len(records), len(PARTS), gh, gw).astype(bool)


def _mask_shares(masks: list[list[dict]]) -> np.ndarray:
    """(images, parts): each RLE mask's area as a share of its image, counted by pycocotools without decoding."""
    from pycocotools import mask as coco_mask

    rles = [{"size": m["size"], "counts": m["counts"].encode("ascii") if isinstance(m["counts"], str) else m["counts"]}
            for ms in masks for m in ms]
    if not rles:
        return np.zeros((0, len(PARTS)))
    pixels = np.array([h * w for h, w in (r["size"] for r in rles)], dtype=float)
    # pycocotools' area() (2.0.11, _mask.pyx) runs `np.array((Rs._n, ), dtype=np.uint8)` on the list's
    # length before building its uint32 result, and NumPy 2 raises OverflowError from 256 masks on
    # (tests/segment/test_masks.py shows it): ask in lists of at most 255. Areas are uint32 pixel counts,
    # exact for any image under 4.2 gigapixels.
    area = np.concatenate([coco_mask.area(rles[i : i + 255]) for i in range(0, len(rles), 255)])
    return (area / np.maximum(pixels, 1)).reshape(len(masks), len(PARTS))


def _build_provenance(captions: dict[str, dict], parts: dict[str, dict]) -> dict:
    """Counts of the latest records per (source, model or reviewer, prompt hash, settings) for each stage."""
    return {"captions": _provenance_table(captions.values(), with_prompt=True),
            "parts": _provenance_table(parts.values(), with_prompt=False)}


def _provenance_table(records, with_prompt: bool) -> pd.DataFrame:
    """Records carry `settings` (and its fingerprint `fp`) since the stage runner; older ones name their
    model and prompt hash at the top level, and are counted by those."""
    counts: Counter = Counter()
    for r in records:
        settings = r.get("settings") or {}
        who = settings.get("model") or r.get("model") or \
            (f"reviewer {settings.get('reviewer') or r.get('reviewer')}" if r.get("source") == "human" else "-")
        prompt = settings.get("prompt_sha256") or r.get("prompt_hash") or "-"
        key = (r.get("source", "model"), who, prompt if with_prompt else None, r.get("fp") or "-",
               json.dumps(settings, sort_keys=True) if settings else "-")
        counts[key] += 1
    cols = ["source", "model or reviewer", "prompt hash", "fingerprint", "settings", "records"]
    frame = pd.DataFrame([(*k, n) for k, n in counts.most_common()], columns=cols)
    return frame if with_prompt else frame.drop(columns="prompt hash")


# --- export ----------------------------------------------------------------------
def _from_export(root: Path) -> Dataset:
    files = sorted((root / "data").glob("*.parquet"))
    tables = []
    for f in files:
        names = pq.read_schema(f).names
        missing = {"image_id", "vehicle_id"} - set(names)
        if missing:
            raise T2IError(f"{f} is not a t2iverw export (no {sorted(missing)[0]} column)")
        table = pq.read_table(f, columns=[c for c in EXPORT_COLUMNS if c in names])
        tables.append(table.append_column("split", pa.array([_split_of(f)] * table.num_rows, pa.string())))
    table = pa.concat_tables(tables, promote_options="default")

    frame = pd.DataFrame({c: _column(table, c).to_pylist() for c in ("image_id", "vehicle_id", "split", *META, "path")})
    frame = _missing_as_none(frame, META)
    frame["texts"] = _column(table, "captions").to_pylist()
    frame["caption_source"] = _column(table, "caption_source").to_pylist()
    frame["flags"] = _column(table, "caption_flags").to_pylist()
    grids, rows = _export_grids(table)
    area = _export_areas(table, rows)
    index = {image_id: i for i, image_id in enumerate(frame["image_id"])}
    dataset = pads.dataset(files, format="parquet")
    with_images = "image" in dataset.schema.names

    def load_images(image_ids: list[str]) -> dict[str, Image.Image]:
        """Only these rows' image bytes are read (one `take`), and only they are decoded."""
        if not with_images or not image_ids:
            return {}
        cells = dataset.take([index[i] for i in image_ids], columns=["image"]).column("image").to_pylist()
        return {i: Image.open(io.BytesIO(c["bytes"])).convert("RGB") for i, c in zip(image_ids, cells)
                if c and c.get("bytes")}

    def load_masks(image_id: str) -> list[np.ndarray] | None:
        if "part_masks" not in table.column_names:
            return None
        masks = table.column("part_masks")[index[image_id]].as_py()
        return [decode_rle(m) for m in masks] if masks else None

    provenance = {"caption_source": frame["caption_source"].value_counts().rename_axis("source")
                  .reset_index(name="captions"), "card": _card_creation(root / "README.md")}
    return Dataset("export", root, frame, grids, rows, area, provenance, load_images, load_masks)


def _split_of(path: Path) -> str:
    """The split a shard belongs to, from its name (`train-00000-of-00001.parquet`)."""
    return path.name.split("-")[0]


def _column(table: pa.Table, name: str) -> pa.ChunkedArray:
    return table.column(name) if name in table.column_names else pa.chunked_array([pa.nulls(table.num_rows)])


def _export_grids(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The non-null `part_grid` cells as one bool array (rows, parts, h, w), flattened by Arrow, not Python."""
    if "part_grid" not in table.column_names:
        return np.zeros((0, len(PARTS), *GRID), dtype=bool), np.zeros(0, dtype=np.int64)
    col = table.column("part_grid").combine_chunks()
    valid = pc.is_valid(col).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(valid)
    kept = col.filter(pa.array(valid))
    gh = kept.type.value_type.list_size
    gw = kept.type.value_type.value_type.list_size
    cells = kept.flatten().flatten().flatten().to_numpy(zero_copy_only=False)
    return cells.reshape(len(rows), len(PARTS), gh, gw).astype(bool), rows


def _export_areas(table: pa.Table, rows: np.ndarray) -> np.ndarray | None:
    if "part_masks" not in table.column_names or not len(rows):
        return None
    masks = table.column("part_masks").take(pa.array(rows)).to_pylist()
    if any(m is None for m in masks):
        return None  # grids without masks (an imported release)
    return _mask_shares(masks)


def _card_creation(card: Path) -> str:
    """The dataset card's `## Creation` section: where an export states its models and settings."""
    if not card.exists():
        return ""
    match = re.search(r"^## Creation\s*$(.*?)(?=^## |\Z)", card.read_text(encoding="utf-8"), re.M | re.S)
    return match.group(1).strip() if match else ""
