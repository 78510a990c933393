"""`t2iverw index`: read a VERI-Wild (or VeRi-776) root into BUILD/images.parquet.

The source layout is detected (VERI-Wild: `train_test_split/vehicle_info.txt`;
VeRi-776: `image_train/` + `train_label.xml`, read by t2iverw/veri776.py) or named with
`--source`. Every selected image is fully decoded once here, so later stages can trust that an
indexed image opens. Bad inputs (a missing file, a truncated JPEG, a malformed
metadata line, a line not in the metadata's encoding) are skipped and listed in
BUILD/rejected.jsonl with a reason: one bad
crop in 400k must not stop a build. Decoding is the slow part (hours for all of
VERI-Wild on one core), so it runs on a thread pool and checkpoints to an append-only
progress log; a killed index resumes where it stopped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from t2iverw.build import BUILD_INFO, IMAGES, REJECTED
from t2iverw.errors import T2IError
from t2iverw.storage import (
    JsonlWriter,
    atomic_path,
    exclusive,
    read_jsonl,
    write_json,
    write_text,
)
from t2iverw.veri776 import is_veri776, read_veri776

INFO_FILE = Path("train_test_split") / "vehicle_info.txt"
PROGRESS = ".index-progress.jsonl"
INDEX_LOCK = ".index.lock"  # one `index` or `import-release` writing a build at a time
SOURCES = ("veri-wild", "veri776")
ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
META_FIELDS = ("camera_id", "time", "model", "type", "color")
SCHEMA = pa.schema(
    [("image_id", pa.string()), ("vehicle_id", pa.string())]
    + [(f, pa.string()) for f in META_FIELDS]
    + [("path", pa.string()), ("width", pa.int32()), ("height", pa.int32()), ("sha256", pa.string())]
)


@dataclass
class IndexSummary:
    images: int
    identities: int
    rejected: Counter = field(default_factory=Counter)
    source: str = "veri-wild"
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"indexed {self.images} images of {self.identities} identities ({self.source})"]
        if self.rejected:
            reasons = ", ".join(f"{n} {r}" for r, n in self.rejected.most_common())
            out.append(f"rejected {sum(self.rejected.values())} ({reasons}); see {REJECTED}")
        return out + self.notes


def build_index(
    source_root: str | Path,
    out: str | Path,
    *,
    limit_ids: int | None = None,
    max_per_id: int | None = None,
    seed: int = 0,
    list_file: str | Path | None = None,
    workers: int = 8,
    source: str = "auto",
    encoding: str = "utf-8",
) -> IndexSummary:
    """Index `source_root` (a VERI-Wild or VeRi-776 tree; `source` "auto" detects which) into `out`.

    `encoding` is that of VERI-Wild's vehicle_info.txt; a line that does not decode is rejected.
    """
    source_root = Path(source_root).resolve()
    out = Path(out)
    with exclusive(out / INDEX_LOCK, f"another `t2iverw index` or `import-release` is writing {out}"):
        return _build_index(source_root, out, limit_ids=limit_ids, max_per_id=max_per_id, seed=seed,
                            list_file=list_file, workers=workers, source=source, encoding=encoding)


def _build_index(source_root: Path, out: Path, *, limit_ids, max_per_id, seed, list_file, workers, source,
                 encoding) -> IndexSummary:
    source = detect_source(source_root) if source == "auto" else source
    notes, corrections = [], []
    if source == "veri776":
        if list_file is not None:
            raise T2IError("--list selects VERI-Wild vid/imgid lines; for VeRi-776 use --limit-ids/--max-per-id")
        read = read_veri776(source_root)
        entries, rejected, corrections = read.entries, read.rejected, read.corrections
        if corrections:
            vehicles = ", ".join(sorted({c["vehicle_id"] for c in corrections}))
            notes.append(f"corrected {len(corrections)} labels of the known typeID=0 erratum (vehicles {vehicles} "
                         f"are SUVs); see {BUILD_INFO}")
    elif source == "veri-wild":
        entries, rejected = read_vehicle_info(source_root, encoding)
    else:
        raise T2IError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    entries, list_rejected = select(entries, limit_ids=limit_ids, max_per_id=max_per_id, seed=seed, list_file=list_file)
    rejected += list_rejected

    checked = check_images(source_root, out, entries, workers)
    rows = []
    for entry in entries:  # the entries become the rows in place, and each result is dropped once used
        result = checked.pop(entry["path"])
        if result.ok:
            entry.update(width=result.width, height=result.height, sha256=result.sha256)
            rows.append(entry)
        else:
            rejected.append({"image": f"{entry['vehicle_id']}/{entry['image_id']}", "reason": result.reason})
    del entries
    if not rows:
        raise T2IError(f"no usable images under {source_root} ({len(rejected)} rejected; see {out / REJECTED})"
                       if rejected else f"no images selected under {source_root}")
    selection = dict(limit_ids=limit_ids, max_per_id=max_per_id, seed=seed,
                     list_file=str(list_file) if list_file else None)
    info = {"source_format": source, "selection": selection}
    if source == "veri-wild":
        info["encoding"] = encoding
    if corrections:
        info["corrections"] = corrections
    write_outputs(out, rows, rejected, source_root, info)
    (out / PROGRESS).unlink(missing_ok=True)
    return IndexSummary(
        images=len(rows),
        identities=len({r["vehicle_id"] for r in rows}),
        rejected=Counter(_reason_kind(r["reason"]) for r in rejected),
        source=source,
        notes=notes,
    )


def detect_source(source_root: Path) -> str:
    """Which dataset layout `source_root` holds."""
    if not source_root.is_dir():
        raise T2IError(f"source root {source_root} does not exist or is not a directory")
    if (source_root / INFO_FILE).exists():
        return "veri-wild"
    if is_veri776(source_root):
        return "veri776"
    raise T2IError(f"{source_root} is neither a VERI-Wild root (no {INFO_FILE}) nor a VeRi-776 root "
                   "(no image_train/ with train_label.xml)")


def read_vehicle_info(source_root: Path, encoding: str = "utf-8") -> tuple[list[dict], list[dict]]:
    """Parse vehicle_info.txt: (entries, rejected lines). The first line is a header.

    Lines are decoded one at a time, strictly: a line that is not valid `encoding` is
    rejected with its number (rather than read with replacement characters).
    """
    if not source_root.is_dir():
        raise T2IError(f"source root {source_root} does not exist or is not a directory")
    info = source_root / INFO_FILE
    if not info.exists():
        raise T2IError(f"{info} not found: expected a VERI-Wild root with {INFO_FILE}")
    try:
        "".encode(encoding)
    except LookupError:
        raise T2IError(f"unknown --encoding {encoding!r}") from None
    entries, rejected, seen = [], [], set()
    for lineno, raw in _numbered_lines(info):
        try:
            line = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            rejected.append({"line": lineno, "text": raw[:200].decode("ascii", errors="backslashreplace"),
                             "reason": f"undecodable metadata line {lineno}: not valid {encoding} at byte "
                                       f"{exc.start} (give --encoding)"})
            continue
        if not line.strip():
            continue
        entry = _parse_info_line(line)
        if isinstance(entry, str):
            rejected.append({"line": lineno, "text": line[:200], "reason": f"malformed metadata line {lineno}: {entry}"})
        elif entry["image_id"] in seen:
            rejected.append({"line": lineno, "text": line[:200], "reason": f"duplicate image id {entry['image_id']}"})
        else:
            seen.add(entry["image_id"])
            entries.append(entry)
    return entries, rejected


def _numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the line end) after the header, read as a stream, not held."""
    with path.open("rb") as fh:
        next(fh, None)
        for lineno, raw in enumerate(fh, start=2):
            yield lineno, raw.rstrip(b"\r\n")


def _parse_info_line(line: str) -> dict | str:
    """The entry of one vehicle_info.txt line, or why it is not one. Ids are letters, digits, `_` and `-`
    only: they name files and URLs and appear in pages, so nothing else may pass."""
    fields = [f.strip() for f in line.split(";")]
    if len(fields) != 1 + len(META_FIELDS):
        return f"{len(fields)} fields, not {1 + len(META_FIELDS)}"
    vid, _, image_id = fields[0].partition("/")
    if not (ID_RE.match(vid) and ID_RE.match(image_id)):
        return f"id {fields[0][:80]!r} is not VEHICLE/IMAGE of letters, digits, '_' and '-'"
    # repeated values (vehicle, camera, model, type, colour) share one string: at 416k lines that is
    # most of an entry's memory
    meta = {k: v if k == "time" else sys.intern(v) for k, v in zip(META_FIELDS, fields[1:])}
    return {"image_id": image_id, "vehicle_id": sys.intern(vid), **meta, "path": f"images/{vid}/{image_id}.jpg"}


def select(
    entries: list[dict], *, limit_ids: int | None, max_per_id: int | None, seed: int, list_file: str | Path | None
) -> tuple[list[dict], list[dict]]:
    """Restrict to a published image list, or to a reproducible subset of ids and images per id."""
    rejected: list[dict] = []
    if list_file is not None:
        wanted = _read_list(Path(list_file))
        by_key = {f"{e['vehicle_id']}/{e['image_id']}": e for e in entries}
        rejected = [{"image": k, "reason": f"listed in {Path(list_file).name} but not in vehicle_info.txt"}
                    for k in wanted if k not in by_key]
        entries = [by_key[k] for k in wanted if k in by_key]
    if limit_ids is not None:
        keep = set(sorted({e["vehicle_id"] for e in entries}, key=lambda v: keyed_hash(seed, "id", v))[:limit_ids])
        entries = [e for e in entries if e["vehicle_id"] in keep]
    if max_per_id is not None:
        ranked = sorted(entries, key=lambda e: keyed_hash(seed, "image", e["image_id"]))
        count: Counter = Counter()
        keep_images = set()
        for e in ranked:
            if count[e["vehicle_id"]] < max_per_id:
                count[e["vehicle_id"]] += 1
                keep_images.add(e["image_id"])
        entries = [e for e in entries if e["image_id"] in keep_images]
    return sorted(entries, key=lambda e: (e["vehicle_id"], e["image_id"])), rejected


def _read_list(path: Path) -> list[str]:
    if not path.exists():
        raise T2IError(f"image list {path} not found")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    names = [n[: -len(".jpg")] if n.endswith(".jpg") else n for n in names]
    bad = next((n for n in names if n.count("/") != 1), None)
    if bad is not None:
        raise T2IError(f"{path}: expected one vehicle_id/image_id per line, got {bad!r}")
    return list(dict.fromkeys(names))


def keyed_hash(seed: int, *parts: str) -> str:
    """A seed-keyed, library-independent sort key: same order on every machine and version."""
    return hashlib.sha256(":".join([str(seed), *parts]).encode()).hexdigest()


class Decoded(NamedTuple):
    """What decoding one image found (a tuple: 416k of them must be small)."""

    ok: bool
    width: int | None = None
    height: int | None = None
    sha256: str | None = None
    reason: str | None = None


def check_images(source_root: Path, out: Path, entries: list[dict], workers: int) -> dict[str, Decoded]:
    """path -> decode result for every entry, reusing results a killed run already logged."""
    with ImageChecker(source_root, out, workers, total=len(entries)) as checker:
        return dict(zip((e["path"] for e in entries), checker.check([e["path"] for e in entries])))


class ImageChecker:
    """Decodes crops on a thread pool a batch at a time, logging each result to the progress
    file, so a caller that streams its records (import-release) decodes as it reads and a
    killed run decodes nothing twice. A caller busy in Python itself passes a process pool
    (`pool`), where decoding does not wait on its GIL."""

    def __init__(self, source_root: Path, out: Path, workers: int, total: int | None = None,
                 pool: Executor | None = None):
        self.source_root, self.progress_path, self.workers = source_root, out / PROGRESS, workers
        self.total, self._given_pool = total, pool

    def __enter__(self) -> ImageChecker:
        self.resumed = {r["path"]: _decoded(r) for r in read_jsonl(self.progress_path)}
        self._log = JsonlWriter(self.progress_path)
        self._pool = self._given_pool or ThreadPoolExecutor(max_workers=self.workers)
        self.bar = tqdm(total=self.total, desc="index", unit="img")
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
        if self._given_pool is None:
            self._pool.shutdown()
        self._log.close()

    def check(self, paths: list[str]) -> list[Decoded]:
        """The decode result of each path, in order (a path a killed run logged is not decoded again)."""
        found = {p: self.resumed.pop(p) for p in paths if p in self.resumed}
        decode = functools.partial(_check_one, self.source_root)
        for chunk in chunks([p for p in paths if p not in found], 256):
            results = list(self._pool.map(decode, chunk, chunksize=128))  # a process pool's batches; threads ignore it
            self._log.write_many(results)
            found.update((r["path"], _decoded(r)) for r in results)
        self.bar.update(len(paths))
        return [found[p] for p in paths]


def _decoded(result: dict) -> Decoded:
    return Decoded(result["ok"], result.get("width"), result.get("height"), result.get("sha256"), result.get("reason"))


def _check_one(source_root: Path, rel: str) -> dict:
    path = source_root / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {"path": rel, "ok": False, "reason": f"missing file {rel}"}
    except OSError as exc:
        return {"path": rel, "ok": False, "reason": f"unreadable file {rel}: {exc}"}
    try:
        with Image.open(path) as im:
            im.load()  # a full decode: truncated JPEGs only fail here
            width, height = im.size
    except Exception as exc:  # PIL raises many types for corrupt data
        return {"path": rel, "ok": False, "reason": f"corrupt image {rel}: {exc}"}
    return {"path": rel, "ok": True, "width": width, "height": height, "sha256": hashlib.sha256(data).hexdigest()}


def chunks(items: Iterable, size: int) -> Iterator[list]:
    """Lists of `size` items (the last may be shorter), from any iterable."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _reason_kind(reason: str) -> str:
    """'corrupt image images/1/2.jpg: ...' -> 'corrupt image', for the summary line."""
    for kind in ("missing file", "unreadable file", "corrupt image", "malformed metadata line", "duplicate image id",
                 "undecodable metadata line", "no label", "unknown typeID", "unknown colorID"):
        if reason.startswith(kind):
            return kind
    return "not in vehicle_info.txt" if "not in vehicle_info.txt" in reason else reason


def write_outputs(out: Path, rows: list[dict] | pa.Table, rejected: list[dict], source_root: Path, info: dict) -> None:
    """images.parquet, rejected.jsonl and build.json (`info` adds what this source needs recorded)."""
    table = rows.select(SCHEMA.names).cast(SCHEMA) if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=SCHEMA)
    with atomic_path(out / IMAGES) as tmp:
        pq.write_table(table, tmp)
    write_text(out / REJECTED, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected))
    write_json(out / BUILD_INFO, {"source_root": str(source_root),
                                  # found again if the build and its source move together (build.py)
                                  "source_root_relative": os.path.relpath(source_root, out.resolve()),
                                  **info, "images": len(rows), "rejected": len(rejected)})
