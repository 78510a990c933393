"""Text from the build is data, never markup: captions, vehicle models and reviewer names holding HTML are
shown as text in the report, the review page and the dataset card, in a real headless Chromium, and no
injected script runs. (The leaderboard and the search page have their own: tests/evaluation/test_leaderboard.py,
tests/training/test_search_browser.py.) Ids cannot carry HTML at all: `index` refuses them."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from markdown_it import MarkdownIt

from t2iverw.build import BuildDir
from t2iverw.cli import cli
from t2iverw.demo import write_truth_parts
from t2iverw.runner import open_log
from t2iverw.storage import read_jsonl

SCRIPT = "<script>window.pwned=1</script>"
IMG = '"><img src=x onerror="window.pwned=2">'
PAYLOADS = (SCRIPT, IMG)


@pytest.fixture
def hostile_build(synth_root, tmp_path):
    """A build whose vehicle models, captions and reviewer name are HTML payloads."""
    root = tmp_path / "src"
    shutil.copytree(synth_root, root)
    info = root / "train_test_split" / "vehicle_info.txt"
    lines = info.read_text().splitlines()
    for k in range(1, len(lines)):  # id;Camera ID;Time;Model;Type;Color
        cells = lines[k].split(";")
        cells[3] = PAYLOADS[k % 2]
        lines[k] = ";".join(cells)
    info.write_text("\n".join(lines) + "\n")
    build = tmp_path / "build"
    for args in (["index", str(root), "--out", str(build)], ["caption", str(build), "--backend", "template"],
                 ["split", str(build), "--seed", "0"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
    bd = BuildDir.open(build)
    rows = bd.images().to_pylist()
    with open_log(bd, "captions", "review-x", source="human", settings={"reviewer": IMG}) as log:
        log.append([{"image_id": r["image_id"], "status": "ok", "text": f"A car {PAYLOADS[k % 2]} with wheels.",
                     "action": "edit", "reviewer": IMG} for k, r in enumerate(rows)])
    write_truth_parts(bd)
    return build


def no_injection(page) -> None:
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.locator("img[src=x]").count() == 0 and page.locator("body script:not([src])").evaluate_all(
        "nodes => nodes.filter(n => n.textContent.includes('pwned')).length") == 0


def test_report_shows_hostile_text_as_text(hostile_build, tmp_path, page):
    result = CliRunner().invoke(cli, ["report", str(hostile_build), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report" / "index.html").read_text()
    assert SCRIPT not in html and IMG not in html
    page.goto((tmp_path / "report" / "index.html").as_uri())
    no_injection(page)
    text = page.inner_text("body")
    assert any(p in text for p in PAYLOADS), "the payloads should be visible as text somewhere on the page"


def test_review_page_shows_hostile_text_as_text(hostile_build, start_served, page):
    app = start_served("review", str(hostile_build), "--port", "0", "--reviewer", "zed", "--only", "all")
    page.goto(app.url)
    for _ in range(3):  # the first items: captions and models with both payloads
        page.wait_for_function("document.getElementById('title').textContent.includes('vehicle')")
        shown = page.evaluate("document.getElementById('title').textContent.split(' ')[0]")
        caption = page.locator("#caption").input_value()
        assert any(p in caption for p in PAYLOADS), caption
        assert any(p in page.inner_text("body") for p in PAYLOADS)
        no_injection(page)
        page.keyboard.press("Escape")
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"!document.getElementById('title').textContent.startsWith({json.dumps(shown + ' ')})")


def test_dataset_card_escapes_hostile_settings(hostile_build, tmp_path, page):
    result = CliRunner().invoke(cli, ["export", str(hostile_build), "--out", str(tmp_path / "ds"), "--no-images"])
    assert result.exit_code == 0, result.output
    card = (tmp_path / "ds" / "README.md").read_text()
    assert IMG not in card and "&lt;img src=x onerror=" in card  # the reviewer name, in the provenance
    # rendered as the Hub does, raw HTML passed through: escaped text stays text
    body = MarkdownIt("commonmark", {"html": True}).enable("table").render(card.split("---", 2)[2])
    (tmp_path / "card.html").write_text(f"<!doctype html><html><body>{body}</body></html>")
    page.goto((tmp_path / "card.html").as_uri())
    no_injection(page)
    assert '<img src=x onerror="window.pwned=2">' in page.inner_text("body")


def test_ids_holding_html_are_refused_by_index(synth_root, tmp_path):
    root = tmp_path / "src"
    shutil.copytree(synth_root, root)
    info = root / "train_test_split" / "vehicle_info.txt"
    first = info.read_text().splitlines()[1].split(";")[0]  # vehicle/image
    vehicle, image = first.split("/")
    bad = '"><img src=x onerror=alert(1)>'
    (root / "images" / vehicle / f"{image}.jpg").rename(root / "images" / vehicle / f"{bad}.jpg")
    with info.open("a") as fh:
        fh.write(f"{vehicle}/{bad};1;2018-03-06 18:26:44;A;SUV;white\n")
    result = CliRunner().invoke(cli, ["index", str(root), "--out", str(tmp_path / "build")])
    assert result.exit_code == 0, result.output
    ids = set(BuildDir.open(tmp_path / "build").images(["image_id"]).column("image_id").to_pylist())
    assert bad not in ids and image not in ids
    reasons = [r["reason"] for r in read_jsonl(tmp_path / "build" / "rejected.jsonl")]
    assert any(r.startswith("malformed metadata line") and "is not VEHICLE/IMAGE of letters" in r for r in reasons)
