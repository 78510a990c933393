"""`t2iverw report` on a synthetic build and on its export: figures exist, and the page's numbers
equal those computed here from the sample itself (template captions, true masks, split.json)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from matplotlib import colormaps
from PIL import Image

from t2iverw.build import BuildDir
from t2iverw.caption.backends import template_caption
from t2iverw.caption.run import run_captions
from t2iverw.cli import cli
from t2iverw.constants import PARTS
from t2iverw.demo import write_truth_parts
from t2iverw.export import export_dataset
from t2iverw.grid import mask_to_grid, pack_grid
from t2iverw.report.write import write_report
from t2iverw.runner import open_log
from t2iverw.synth import read_truth

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def edited(row: dict, k: int) -> str:
    """A reviewer's longer caption: the template plus k more sentences (so lengths vary)."""
    return template_caption(row) + " It has a small sticker on the rear window." * k


@pytest.fixture
def annotated(build_dir):
    """The conftest build with template captions, every third one edited by a reviewer to a longer
    text, and the sample's true part masks."""
    run_captions(build_dir, backend="template", progress=False)
    rows = BuildDir.open(build_dir).images().to_pylist()
    with open_log(build_dir, "captions", "review-tester", source="human", settings={"reviewer": "tester"}) as log:
        log.append([{"image_id": r["image_id"], "status": "ok", "text": edited(r, k % 4 + 1), "action": "edit",
                     "reviewer": "tester", "edited_from": template_caption(r)}
                    for k, r in enumerate(rows) if k % 3 == 0])
    write_truth_parts(BuildDir.open(build_dir))
    return build_dir


def expected_numbers(build_dir) -> dict:
    """What the report must say, computed from the index, the template, the edits and the truth masks alone."""
    root = json.loads((build_dir / "build.json").read_text())["source_root"]
    rows = pq.read_table(build_dir / "images.parquet").to_pylist()
    split = json.loads((build_dir / "split.json").read_text())
    side = {v: s for s in ("train", "test") for v in split[f"{s}_ids"]}
    texts = [edited(r, k % 4 + 1) if k % 3 == 0 else template_caption(r) for k, r in enumerate(rows)]
    lengths = [len(t.split()) for t in texts]
    present = np.zeros(len(PARTS))
    for r in rows:
        truth = read_truth(root, f"{r['vehicle_id']}/{r['image_id']}")
        present += [mask_to_grid(m).any() for m in truth]
    per_split = defaultdict(lambda: {"ids": set(), "images": 0})
    for r in rows:
        per_split[side[r["vehicle_id"]]]["ids"].add(r["vehicle_id"])
        per_split[side[r["vehicle_id"]]]["images"] += 1
    return {
        "mean_words": sum(lengths) / len(lengths),
        "presence": present / len(rows),
        "splits": {s: (len(v["ids"]), v["images"]) for s, v in per_split.items()},
        "images": len(rows),
        "edited": sum(1 for k in range(len(rows)) if k % 3 == 0),
    }


def html_table(html: str, table_id: str) -> list[dict[str, str]]:
    """The rows of one table of the page, as {header: cell text}."""
    match = re.search(rf'<table[^>]*id="{table_id}".*?</table>', html, re.S)
    assert match, f"no table {table_id} in the page"
    table = ET.fromstring(match.group(0))
    header = [th.text.strip() for th in table.find("thead").iter("th")]
    return [dict(zip(header, ["".join(td.itertext()).strip() for td in tr])) for tr in table.find("tbody")]


def stat(html: str, stat_id: str) -> str:
    match = re.search(rf'id="{stat_id}">([^<]*)<', html)
    assert match, f"no {stat_id} in the page"
    return match.group(1)


def check_page(out, summary, want) -> str:
    html = (out / "index.html").read_text()
    assert summary.figures, "no figures were written"
    for name in summary.figures:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 200, name
        with Image.open(out / name) as im:
            assert im.width > 0 and im.height > 0
        assert f'src="{name}"' in html or f'href="{name}"' in html, f"{name} is not on the page"
    for name in ("caption_length.png", "images_per_identity.png", "heatmaps.png", "parts.png", "attributes.png",
                 "flags.png", "gallery.png"):
        assert name in summary.figures

    assert stat(html, "caption-mean-words") == f"{want['mean_words']:.2f}"
    assert stat(html, "images") == str(want["images"])
    parts = {r["part"]: r["present (grid)"] for r in html_table(html, "table-parts")}
    assert parts == {p: f"{100 * x:.1f}%" for p, x in zip(PARTS, want["presence"])}
    splits = {r["split"]: (int(r["identities"]), int(r["images"])) for r in html_table(html, "table-splits")}
    assert {s: splits[s] for s in ("train", "test")} == want["splits"]
    assert splits["total"][1] == want["images"]
    return html


def heat_mass(path) -> np.ndarray:
    """Per-cell mass of a bare heat map PNG: its lightness above that of the colour scale's zero."""
    zero = np.asarray(Image.new("RGB", (1, 1), tuple(int(255 * c) for c in colormaps["magma"](0.0)[:3])).convert("L"))
    with Image.open(path) as im:
        light = np.asarray(im.convert("L"), dtype=float)
    return np.clip(light - float(zero[0, 0]), 0, None)


def test_report_of_a_build(annotated, tmp_path):
    want = expected_numbers(annotated)
    out = tmp_path / "report"
    summary = write_report(annotated, out)
    html = check_page(out, summary, want)
    provenance = html_table(html, "table-provenance-captions")
    counts = {(r["source"], r["model or reviewer"]): int(r["records"]) for r in provenance}
    assert counts == {("model", "metadata-template"): want["images"] - want["edited"],
                      ("human", "reviewer tester"): want["edited"]}

    # wheels are drawn below the body's belt line in every synthetic view; the roof above it
    wheels, roof = heat_mass(out / "heatmap-wheels.png"), heat_mass(out / "heatmap-roof.png")
    assert wheels.shape == roof.shape == (24, 24)
    half = wheels.shape[0] // 2
    assert wheels.sum() > 0 and wheels[half:].sum() > 0.95 * wheels.sum()
    assert roof.sum() > 0 and roof[:half].sum() > 0.95 * roof.sum()


def test_report_of_an_export_matches_the_build(annotated, tmp_path):
    want = expected_numbers(annotated)
    export_dataset(annotated, tmp_path / "ds")
    out = tmp_path / "report"
    summary = write_report(tmp_path / "ds", out)
    assert summary.kind == "export"
    html = check_page(out, summary, want)
    sources = {r["source"]: r["captions"] for r in html_table(html, "table-provenance-caption-source")}
    assert sources == {"model": str(want["images"] - want["edited"]), "human-edited": str(want["edited"])}
    assert "metadata-template" in html  # the card's Creation section names the caption model


def test_truth_iou_and_cli(annotated, synth_root, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", str(annotated), "--out", str(out), "--truth", str(synth_root),
                                      "--gallery", "0"])
    assert result.exit_code == 0, result.output
    assert str(out / "index.html") in result.output
    html = (out / "index.html").read_text()
    iou = html_table(html, "table-iou")
    # the stored masks are the truth itself: every part that occurs scores a perfect IoU
    assert [r["part"] for r in iou] == list(PARTS)
    assert all(r["pixel IoU"] == "100.0%" and r["grid IoU"] == "100.0%" for r in iou)
    assert 'id="no-gallery"' in html and not (out / "gallery.png").exists()


def test_release_build_with_grids_and_several_captions(build_dir, tmp_path):
    """An imported release: two captions per image, part grids without pixel masks."""
    bd = BuildDir.open(build_dir)
    rows = bd.images().to_pylist()
    release = {"release": "synthetic"}
    texts = ["A car seen from afar.", "The same car, described again in more words than before."]
    with open_log(bd, "captions", "import", source="release", settings=release) as log:
        log.append([{"image_id": r["image_id"], "status": "ok", "text": texts[0], "texts": texts} for r in rows])
    with open_log(bd, "parts", "import", source="release", settings=release) as log:
        log.append([{"image_id": r["image_id"], "status": "ok",
                     "grid": {"shape": [24, 24], "cells": [pack_grid(mask_to_grid(m)) for m in
                                                           read_truth(bd.source_root, f"{r['vehicle_id']}/{r['image_id']}")]}}
                    for r in rows])
    out = tmp_path / "report"
    summary = write_report(build_dir, out)
    html = (out / "index.html").read_text()
    assert stat(html, "caption-count") == str(2 * len(rows))
    assert stat(html, "caption-mean-words") == f"{sum(len(t.split()) for t in texts) / len(texts):.2f}"
    header = html_table(html, "table-parts")[0]
    assert "present (grid)" in header and "present (mask)" not in header  # no pixel masks to measure
    assert "gallery.png" in summary.figures  # overlays drawn from the grids
    sources = {r["source"]: int(r["records"]) for r in html_table(html, "table-provenance-captions")}
    assert sources == {"release": len(rows)}


def test_not_a_dataset_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("Error:") and "neither a build directory" in result.output


@pytest.mark.parametrize("stages", [("index",), ("index", "caption")])
def test_report_of_an_unfinished_build_says_which_stage_is_missing(stages, synth_root, tmp_path):
    """A report is what a user wants before spending GPU hours on `segment`: it must not need one."""
    from t2iverw.caption import run_captions
    from t2iverw.index import build_index

    build = tmp_path / "build"
    build_index(synth_root, build)
    if "caption" in stages:
        run_captions(build, backend="template", progress=False)
    result = CliRunner().invoke(cli, ["report", str(build), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'id="no-parts"' in page and "t2iverw segment BUILD" in page
    assert ('id="no-captions"' in page) == ("caption" not in stages)


def test_images_with_missing_metadata(annotated, tmp_path):
    """Images whose VERI-Wild metadata is missing (no vehicle_info line, a release imported without
    --veri-wild) report as "metadata not in vocabulary": pandas 3 reads such a string cell as
    NaN, which the QA rules once read as text and crashed on."""
    path = annotated / "images.parquet"
    table = pq.read_table(path)
    colour = [None if k % 2 else c for k, c in enumerate(table.column("color").to_pylist())]
    pq.write_table(table.set_column(table.schema.get_field_index("color"), "color",
                                    pa.array(colour, pa.string())), path)
    export_dataset(annotated, tmp_path / "ds")
    for source in (annotated, tmp_path / "ds"):
        out = tmp_path / f"report-{source.name}"
        write_report(source, out)
        rows = {r["metadata"]: r for r in html_table((out / "index.html").read_text(), "table-agreement")}
        assert rows["colour"]["metadata not in vocabulary"] == f"{100 * colour.count(None) / len(colour):.1f}%", source


def test_report_truth_and_segment_eval_report_the_same_imperfect_iou(build_dir, tmp_path):
    """One IoU: `report --truth` and `segment-eval` give the same pooled pixel IoU on masks that are off,
    and it is the count done by hand on rectangles (windows: 50 shared pixels of 150 on one image, 0 of
    20 on the other -> 50/170; wheels: 40 of 120 on the first image only -> 1/3)."""
    from t2iverw.segment.masks import part_record
    from t2iverw.segment.model import PartMasks

    bd = BuildDir.open(build_dir)
    rows = bd.images(["image_id", "vehicle_id", "width", "height"]).to_pylist()[:2]
    assert all(r["height"] >= 24 and r["width"] >= 30 for r in rows)
    windows, wheels = PARTS.index("windows"), PARTS.index("wheels")
    truth, pred = [np.zeros((len(PARTS), r["height"], r["width"]), bool) for r in rows], \
        [np.zeros((len(PARTS), r["height"], r["width"]), bool) for r in rows]
    truth[0][windows, 0:10, 0:10] = True  # 100 px
    pred[0][windows, 5:15, 0:10] = True  # 100 px, rows 5-9 shared: 50 px; union 150
    truth[0][wheels, 20:24, 0:20] = True  # 80 px
    pred[0][wheels, 20:24, 10:30] = True  # 80 px, columns 10-19 shared: 40 px; union 120
    truth[1][windows, 0:4, 0:5] = True  # 20 px, none predicted: union 20
    for row, t in zip(rows, truth):
        path = tmp_path / "truth" / "part_masks" / row["vehicle_id"] / f"{row['image_id']}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sum(m.astype(np.uint8) << i for i, m in enumerate(t)).astype(np.uint8)).save(path)
    with open_log(bd, "parts", "main", source="model", settings={"model": "off by a few pixels"}) as log:
        log.append([part_record(r["image_id"], PartMasks(masks=p, scores=[1.0] * len(PARTS), instances=[1] * len(PARTS)),
                                grid=(24, 24), input_size=384, min_cover=0.5) for r, p in zip(rows, pred)])

    evaluated = CliRunner().invoke(cli, ["segment-eval", str(build_dir), "--truth", str(tmp_path / "truth")])
    assert evaluated.exit_code == 0, evaluated.output
    cells = {line.split()[0]: line.split()[1] for line in evaluated.output.splitlines()[2:] if line.strip()}
    reported = CliRunner().invoke(cli, ["report", str(build_dir), "--out", str(tmp_path / "report"),
                                        "--truth", str(tmp_path / "truth"), "--gallery", "0"])
    assert reported.exit_code == 0, reported.output
    table = {r["part"]: r["pixel IoU"] for r in html_table((tmp_path / "report" / "index.html").read_text(), "table-iou")}
    assert (cells["windows"], table["windows"]) == ("0.294", "29.4%")  # 50/170 = 0.2941
    assert (cells["wheels"], table["wheels"]) == ("0.333", "33.3%")  # 40/120
    from t2iverw.segment.evaluate import evaluate_parts

    assert evaluate_parts(bd, tmp_path / "truth")["parts"]["windows"]["iou"] == 50 / 170
