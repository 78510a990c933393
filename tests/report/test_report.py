"""`t2iverw report` on a synthetic build and on its export: figures exist, and the page's numbers
equal those computed here from the sample itself (template captions, true masks, split.json)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import defaultdict

import numpy as np
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
from t2iverw.grid import mask_to_grid
from t2iverw.report.write import write_report
from t2iverw.synth import read_truth

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def annotated(build_dir):
    """The conftest build with template captions and the sample's true part masks."""
    run_captions(build_dir, backend="template", progress=False)
    write_truth_parts(BuildDir.open(build_dir))
    return build_dir


def expected_numbers(build_dir) -> dict:
    """What the report must say, computed from the index, the template and the truth masks alone."""
    root = json.loads((build_dir / "build.json").read_text())["source_root"]
    rows = pq.read_table(build_dir / "images.parquet").to_pylist()
    split = json.loads((build_dir / "split.json").read_text())
    side = {v: s for s in ("train", "test") for v in split[f"{s}_ids"]}
    lengths = [len(template_caption(r).split()) for r in rows]
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
        assert f'src="{name}"' in html, f"{name} is not on the page"
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
    check_page(out, summary, want)

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
    assert sources == {"model": str(want["images"])}
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


def test_not_a_dataset_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("Error:") and "neither a build directory" in result.output
