"""`t2iverw export`: Parquet shards plus a dataset card that `datasets.load_dataset` reads.

The schema comes from `t2iverw.schema.features()` alone: it types every column, is
embedded in the Parquet metadata (so `load_dataset` restores `Image` and the nested
lists) and is written into the card's YAML. Columns of stages that have not run are
null with the same types. The whole export is built in a temporary sibling directory
and swapped into place, so a killed export never leaves a half-written dataset.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Features
from tqdm import tqdm

from t2iverw.build import BuildDir
from t2iverw.caption.qa import qa_flags
from t2iverw.card import write_card
from t2iverw.constants import AUGMENTED, GRID, PARTS, caption_list
from t2iverw.errors import T2IError
from t2iverw.grid import unpack_grid
from t2iverw.release.augment import copies_for
from t2iverw.release.augment import summary as augment_summary
from t2iverw.runner.columnar import Column, LatestRecords, latest_columns, settings_key
from t2iverw.schema import features
from t2iverw.storage import check_replaceable, staged_dir, write_marker

SHARD_BYTES = 500 * 1024**2  # what `datasets` aims for when it shards Parquet
BATCH_ROWS = 256
MARKER = ".t2iverw-export.json"  # what makes a directory an earlier export, which a rerun may replace
# what the export's checks and its card read of every image's latest record; the rest is read a batch at a time
PROVENANCE: dict[str, Column] = {"image_sha256": lambda r: r.get("image_sha256"), "source": lambda r: r.get("source"),
                                 "fp": lambda r: r.get("fp"), "settings": settings_key}
PART_COLUMNS: dict[str, Column] = {**PROVENANCE, "shape": lambda r: _json((r.get("grid") or {}).get("shape")),
                                   "min_cover": lambda r: _text((r.get("grid") or {}).get("min_cover")),
                                   "masks": lambda r: bool(r.get("masks"))}
STAGES = ("caption", "segment", "release")  # the position columns the rows of a split carry, one per record stage


@dataclass
class ExportSummary:
    out: Path
    rows: dict[str, int]
    shards: dict[str, int]
    captions: int
    parts: int  # rows with part grids
    masks: int  # rows with full-resolution masks too (an imported release has grids only)
    with_images: bool
    grid: tuple[int, int]
    augmented: dict | None = None  # with --augmented-copies: how many came from the release, how many were made, how

    def lines(self) -> list[str]:
        parts = ", ".join(f"{s}: {n} rows in {self.shards[s]} shard(s)" for s, n in self.rows.items())
        total = sum(self.rows.values())
        return [
            f"exported {parts} to {self.out}" + ("" if self.with_images else " (annotations only, no images)"),
            f"captions on {self.captions}/{total} rows, part grids on {self.parts}/{total} rows, "
            f"full-resolution part masks on {self.masks}/{total} rows",
        ]


def export_dataset(build: str | Path | BuildDir, out: str | Path, *, include_images: bool = True,
                   augmented_copies: bool = False) -> ExportSummary:
    """Write the build's train/test splits as Parquet shards with a dataset card to `out`.

    `augmented_copies` adds the dark/light/noisy copies: the release's where an imported
    build has them, else made with the values of t2iverw.release.augment (recorded in the card).
    """
    bd = build if isinstance(build, BuildDir) else BuildDir.open(build)
    out = Path(out)
    if augmented_copies and not include_images:
        raise T2IError("--augmented-copies adds image columns; it cannot go with --no-images")
    check_replaceable(out, bd.root, MARKER, "export")
    split = bd.split()
    latest = {"caption": latest_columns(bd.root, "captions", PROVENANCE).ok(),
              "segment": latest_columns(bd.root, "parts", PART_COLUMNS).ok(),
              "release": latest_columns(bd.root, "release").ok()}
    check_consistency(bd, split, {k: latest[k].table for k in ("caption", "segment")})
    grid = _grid_shape(latest["segment"])
    feats = features(grid, with_images=include_images, augmented=augmented_copies)
    made = Counter() if augmented_copies else None
    index = bd.images()  # an Arrow table; rows become Python dicts one batch at a time
    for stage in STAGES:  # where each row's latest records lie, found once for the whole index
        index = index.append_column(f"_{stage}", latest[stage].positions(index["image_id"]))
    by_split = {name: index.filter(pc.is_in(index["vehicle_id"], pa.array(sorted(split[f"{name}_ids"]), pa.string())))
                for name in ("train", "test")}

    with staged_dir(out, "`t2iverw export`") as tmp:
        shards, sizes = {}, {}
        bar = tqdm(total=sum(t.num_rows for t in by_split.values()), desc="export", unit="img")
        for name, rows in by_split.items():
            shards[name], sizes[name] = _write_split(bd, tmp / "data", name, rows, latest, feats, grid, bar, made)
        bar.close()
        rows = pa.concat_tables(by_split.values())
        summary = ExportSummary(out, {k: v.num_rows for k, v in by_split.items()}, shards,
                                len(rows) - rows["_caption"].null_count, len(rows) - rows["_segment"].null_count,
                                _true_count(latest["segment"].column("masks", rows["_segment"])),
                                include_images, grid, augment_summary(made))
        write_card(tmp / "README.md", feats, summary, sizes, split,
                   {"captions": settings_groups(latest["caption"].table),
                    "parts": settings_groups(latest["segment"].table)},
                   _counts(latest["segment"].table["min_cover"]))
        write_marker(tmp, MARKER, {"format": "parquet", "build": str(bd.root.resolve()), "images": include_images,
                                   "augmented_copies": augmented_copies, "rows": summary.rows})
    return summary


def check_consistency(bd: BuildDir, split: dict, records: dict[str, pa.Table]) -> None:
    """Refuse, saying what to rerun, when the split or the records no longer describe the indexed images.

    A split made before a re-index would silently drop the new identities' rows, and a
    record made from an image file that has since changed would describe another image.
    `records`: stage -> a table of its ok records' image_id and image_sha256 (Arrow, so 416k cost no dicts).
    """
    index = bd.images(["image_id", "vehicle_id", "sha256"])
    indexed = set(pc.unique(index["vehicle_id"]).to_pylist())
    listed = set(split["train_ids"]) | set(split["test_ids"])
    unsplit, gone = sorted(indexed - listed), sorted(listed - indexed)
    if unsplit or gone:
        what = [f"{len(unsplit)} indexed identities (e.g. {unsplit[0]}) are in neither train nor test"] if unsplit else []
        what += [f"{len(gone)} of its identities (e.g. {gone[0]}) are not in the index"] if gone else []
        raise T2IError(f"{bd.split_path} no longer matches the index: {' and '.join(what)}; "
                       f"re-run `t2iverw split {bd.root}` (same --seed, or --from the published split)")
    images = {name: pc.sum(pc.is_in(index["vehicle_id"], pa.array(split[f"{name}_ids"], pa.string()))).as_py() or 0
              for name in ("train", "test")}
    counted = {name: split.get("counts", {}).get(name, {}).get("images") for name in images}
    if any(counted[n] is not None and counted[n] != images[n] for n in images):
        raise T2IError(f"{bd.split_path} counts {counted['train']} train / {counted['test']} test images but the "
                       f"index now has {images['train']} / {images['test']}; re-run `t2iverw split {bd.root}`")
    for stage, recs in records.items():
        where = pc.index_in(recs["image_id"], value_set=index["image_id"])
        indexed_sha = index["sha256"].take(where)
        own = recs["image_sha256"].cast(pa.string())
        stale_mask = pc.and_(pc.is_valid(where), pc.fill_null(pc.not_equal(own, indexed_sha), True))
        stale = sorted(recs["image_id"].filter(stale_mask).to_pylist())
        if stale:
            raise T2IError(f"{len(stale)} {stage} records (e.g. {stale[0]}) were made from an earlier version of "
                           f"their image; re-run `t2iverw {stage} {bd.root}` (changed images are pending again)")


def settings_groups(records: pa.Table) -> list[dict]:
    """The distinct (source, settings) that made the records (a LatestRecords table), with counts, most common first.

    More than one group means the column mixes settings (a run with --keep, or human
    edits beside model captions): the card says so instead of naming one model.
    """
    if not records.num_rows:
        return []
    table = pa.table({k: records[k].cast(pa.string()) for k in ("source", "fp", "settings")})
    groups = table.group_by(["source", "fp"], use_threads=False).aggregate([("settings", "first"), ([], "count_all")])
    out = [{"source": g["source"] if g["source"] is not None else "unknown", "fp": g["fp"],
            "settings": json.loads(g["settings_first"]) if g["settings_first"] else {}, "count": g["count_all"]}
           for g in groups.to_pylist()]
    return sorted(out, key=lambda g: (-g["count"], g["source"], g["fp"] or ""))


def _counts(values: pa.ChunkedArray) -> list[tuple[str, int]]:
    """How many records carry each (non-null) value, most common first."""
    counts = pc.value_counts(values.cast(pa.string()).drop_null()).to_pylist() if len(values) else []
    return sorted(((c["values"], c["counts"]) for c in counts), key=lambda c: (-c[1], c[0]))


def _true_count(values: pa.Array) -> int:
    return int(pc.sum(values.cast(pa.bool_())).as_py() or 0)


def _json(value) -> str | None:
    return None if value is None else json.dumps(value)


def _text(value) -> str | None:
    return None if value is None else str(value)


def _grid_shape(parts: LatestRecords) -> tuple[int, int]:
    shapes = {tuple(json.loads(s)) for s in pc.unique(parts.table["shape"].cast(pa.string())).to_pylist()} \
        if len(parts) else set()
    if len(shapes) > 1:
        raise T2IError(f"part records use different grid shapes {sorted(shapes)}; re-run `t2iverw segment` with one --grid")
    return shapes.pop() if shapes else GRID


def _write_split(bd, data_dir, name, rows: pa.Table, latest: dict[str, LatestRecords], feats, grid, bar,
                 made) -> tuple[int, int]:
    """Stream one split into shards of at most SHARD_BYTES (copies included); returns (shards, bytes written).

    Rows are read BATCH_ROWS at a time; a batch is cut where the next row would take the
    shard past its target (a single row larger than the target gets a shard of its own).
    Shards are numbered once their count is known. Each batch reads its rows' latest
    records from the logs (the `_<stage>` columns say where), so no stage is held whole.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    schema = _schema_with_features(feats)
    paths: list[Path] = []
    writer, filled = None, 0
    for batch in rows.to_batches(max_chunksize=BATCH_ROWS) or [pa.RecordBatch.from_pylist([], schema=rows.schema)]:
        dicts = batch.drop_columns([f"_{stage}" for stage in STAGES]).to_pylist()
        ids = [r["image_id"] for r in dicts]
        recs = {stage: {i: r for i, r in zip(ids, latest[stage].fetch(batch[f"_{stage}"].to_pylist())) if r}
                for stage in STAGES}
        table = _to_table(bd, dicts, recs["caption"], recs["segment"], feats, grid, schema, recs["release"], made)
        row_bytes = _row_bytes(table)
        start = 0
        while start < table.num_rows or writer is None:
            if writer is None or (filled and filled + row_bytes[start] > SHARD_BYTES):
                if writer is not None:
                    writer.close()
                paths.append(data_dir / f"{name}-{len(paths):05d}.parquet.part")
                writer, filled = pq.ParquetWriter(paths[-1], schema), 0
            end = start
            while end < table.num_rows and (end == start or filled + row_bytes[end] <= SHARD_BYTES):
                filled += row_bytes[end]
                end += 1
            if end > start:
                writer.write_table(table.slice(start, end - start))
            start = end
        bar.update(len(dicts))
    writer.close()
    written = 0
    for i, path in enumerate(paths):
        final = path.with_name(f"{name}-{i:05d}-of-{len(paths):05d}.parquet")
        path.rename(final)
        written += final.stat().st_size
    return len(paths), written


def _row_bytes(table: pa.Table) -> list[int]:
    """Each row's image bytes (original and copies): what a shard's size is made of."""
    sizes = np.zeros(table.num_rows, dtype=np.int64)
    for name in ("image", *(f"image_{kind}" for kind in AUGMENTED)):
        if name in table.column_names:
            sizes += pc.fill_null(pc.binary_length(pc.struct_field(table[name], "bytes")), 0).to_numpy()
    return sizes.tolist()


def _schema_with_features(feats: Features) -> pa.Schema:
    """The Arrow schema with the `datasets` Features in its metadata, as `datasets` itself writes it."""
    meta = {"huggingface": json.dumps({"info": {"features": feats.to_dict()}})}
    return feats.arrow_schema.with_metadata(meta)


def _to_table(bd, rows, captions, parts, feats, grid, schema, release, made) -> pa.Table:
    cols: dict[str, pa.Array] = {}
    for col in ("image_id", "vehicle_id", "camera_id", "time", "model", "type", "color", "path", "width", "height", "sha256"):
        cols[col] = pa.array([r[col] for r in rows], type=schema.field(col).type)
    ids = [r["image_id"] for r in rows]
    cols["caption_id"] = pa.array(ids, type=pa.string())
    caps = [captions.get(i) for i in ids]
    cols["caption"] = pa.array([c["text"] if c else None for c in caps], type=pa.string())
    cols["captions"] = pa.array([caption_texts(c) if c else None for c in caps], type=schema.field("captions").type)
    cols["caption_source"] = pa.array([caption_source(c) if c else None for c in caps], type=pa.string())
    cols["caption_flags"] = pa.array([qa_flags(c["text"], r) if c else None for c, r in zip(caps, rows)],
                                     type=schema.field("caption_flags").type)
    recs = [parts.get(i) for i in ids]
    cols["part_masks"] = pa.array(  # an imported release has grids only: no masks, no scores
        [[{"size": m["size"], "counts": m["counts"]} for m in p["masks"]] if p and p.get("masks") else None
         for p in recs], type=schema.field("part_masks").type)
    cols["part_scores"] = pa.array([p.get("scores") if p else None for p in recs], type=schema.field("part_scores").type)
    cols["part_grid"] = _grid_array(recs, grid).cast(schema.field("part_grid").type)
    rel = [release.get(i) for i in ids]
    cols["mim_seed"] = _mim_seed_array(rel, grid).cast(schema.field("mim_seed").type)
    cols["prompt"] = pa.array([r.get("prompt") if r else None for r in rel], type=pa.string())
    if "image" in feats:
        images = list(_image_structs(bd, rows))
        cols["image"] = pa.array(images, type=schema.field("image").type)
    if made is not None:  # only with images (export_dataset refuses copies without them)
        for kind, structs in _augmented_structs(bd, rows, rel, made, [i["bytes"] for i in images]).items():
            cols[f"image_{kind}"] = pa.array(structs, type=schema.field(f"image_{kind}").type)
    return pa.table({name: cols[name] for name in schema.names}, schema=schema)


def caption_texts(record: dict) -> list[str]:
    """Every caption of a caption record: `texts` when it holds several (a release), else its `text`."""
    return caption_list(record.get("texts"), record["text"])


def caption_source(record: dict) -> str:
    """The export's `caption_source` of a caption record (see t2iverw.schema.CAPTION_SOURCES)."""
    source = record.get("source", "model")
    if source == "human":
        return "human-edited" if record.get("edited_from") is not None and record["text"] != record["edited_from"] \
            else "human-accepted"
    return source


def _grid_array(recs: list[dict | None], grid: tuple[int, int]) -> pa.Array:
    """parts x H x W bool grids as nested fixed-size lists, built from one flat numpy buffer (no Python lists)."""
    gh, gw = grid
    cells = np.zeros((len(recs), len(PARTS), gh, gw), dtype=bool)
    for i, rec in enumerate(recs):
        if rec:
            cells[i] = [unpack_grid(h, grid) for h in rec["grid"]["cells"]]
    flat = pa.array(cells.ravel(), type=pa.bool_())
    rows = pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(flat, gw), gh)
    missing = pa.array([rec is None for rec in recs], type=pa.bool_())
    return pa.FixedSizeListArray.from_arrays(rows, len(PARTS), mask=missing)


def _mim_seed_array(rel: list[dict | None], grid: tuple[int, int]) -> pa.Array:
    """The release's `mask` grid of each row (null where the build has none), as nested fixed-size lists."""
    gh, gw = grid
    cells = np.zeros((len(rel), gh, gw), dtype=bool)
    missing = []
    for i, r in enumerate(rel):
        missing.append(not (r and r.get("mask")))
        if not missing[-1]:
            cells[i] = unpack_grid(r["mask"], grid)
    rows = pa.FixedSizeListArray.from_arrays(pa.array(cells.ravel(), type=pa.bool_()), gw)
    return pa.FixedSizeListArray.from_arrays(rows, gh, mask=pa.array(missing, type=pa.bool_()))


def _augmented_structs(bd: BuildDir, rows: list[dict], rel: list[dict | None], made: Counter,
                       originals: list[bytes]) -> dict[str, list[dict]]:
    """kind -> image structs of the dark/light/noisy copies: the release's files, else made (counted in `made`)."""
    out: dict[str, list[dict]] = {kind: [] for kind in AUGMENTED}
    for row, r, original in zip(rows, rel, originals):
        data = copies_for(bd, row, r, made, original)
        for kind in AUGMENTED:
            out[kind].append({"bytes": data[kind], "path": f"{row['image_id']}_{kind}.jpg"})
    return out


def _image_structs(bd: BuildDir, rows: list[dict]) -> Iterator[dict]:
    """Original JPEG bytes (no re-encoding), checked against the hash recorded at index time."""
    for r in rows:
        yield {"bytes": bd.read_image(r), "path": f"{r['image_id']}.jpg"}
