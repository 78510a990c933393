"""How long `t2iverw report` takes at T2I-VeRW's size (15k images), on a build and on its export.

The issue's target: well under a minute on this machine. A small synthetic sample is
drawn and indexed once; its rows, template captions and true part masks are then
repeated under new image and vehicle ids up to --images, so the records have real
RLE masks and grids and the gallery decodes real JPEGs. Building the big build and
exporting it are setup, not measured.

    python benchmark/bench_report.py                 # 15,000 images
    python benchmark/bench_report.py --images 3000 --keep /tmp/bench-report
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from t2iverw.build import BuildDir
from t2iverw.caption.backends import template_caption
from t2iverw.caption.qa import qa_flags
from t2iverw.demo import write_truth_parts
from t2iverw.export import export_dataset
from t2iverw.index import SCHEMA, build_index
from t2iverw.runner import open_log
from t2iverw.report.write import write_report
from t2iverw.split import make_split
from t2iverw.storage import write_json
from t2iverw.synth import write_sample

PER_ID = 8  # T2I-VeRW: 14,668 images of 1,796 identities
CAPTION_SETTINGS = {"backend": "template", "model": "metadata-template", "template": 1}


def make_big_build(work: Path, images: int) -> Path:
    """A build of `images` rows whose records repeat those of a small, really annotated sample."""
    sample, small, big = work / "sample", work / "small", work / "big"
    write_sample(sample, ids=40, per_id=(3, 8), seed=0)
    build_index(sample, small)
    write_truth_parts(BuildDir.open(small))
    base = BuildDir.open(small)
    rows = base.images().to_pylist()
    parts = base.parts()

    big_rows, captions, part_records = [], [], []
    for k in range(images):
        src = rows[k % len(rows)]
        row = {**src, "image_id": f"{k + 1:06d}", "vehicle_id": f"{k // PER_ID + 1:05d}"}
        big_rows.append(row)
        text = template_caption(row)
        captions.append({"image_id": row["image_id"], "caption_id": row["image_id"], "status": "ok", "text": text,
                         "qa": qa_flags(text, row)})
        part_records.append({**parts[src["image_id"]], "image_id": row["image_id"]})
    big.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(big_rows, schema=SCHEMA), big / "images.parquet")
    write_json(big / "build.json", {**base.info(), "counts": {"images": images}})
    bd = BuildDir.open(big)
    with open_log(bd, "captions", "main", source="model", settings=CAPTION_SETTINGS) as log:
        log.append(captions)
    with open_log(bd, "parts", "main", source="truth", settings=next(iter(parts.values()))["settings"]) as log:
        log.append(part_records)
    make_split(big)
    return big


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=15_000)
    parser.add_argument("--keep", type=Path, help="Work in this directory and keep it (default: a temp dir).")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        t0 = time.perf_counter()
        big = make_big_build(work, args.images)
        export_dataset(big, work / "dataset")
        print(f"setup: {args.images} images built and exported in {time.perf_counter() - t0:.1f}s")
        for name, source in (("build", big), ("export", work / "dataset")):
            out = work / f"report-{name}"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            summary = write_report(source, out)
            took = time.perf_counter() - start
            print(json.dumps({"input": name, "images": summary.images, "figures": len(summary.figures),
                              "seconds": round(took, 2)}))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
