"""Text from the build is data, never markup: captions, vehicle models and reviewer names holding HTML are
shown as text in the report, the review page and the dataset card, in a real headless Chromium, and no
injected script runs. (The leaderboard and the search page have their own: tests/evaluation/test_leaderboard.py,
tests/training/test_search_browser.py.) Ids cannot carry HTML at all: they name export files and sit in every
page, so every source that brings ids in refuses any id not of letters, digits, '_' and '-' with a rejected.jsonl
reason (`index` of VERI-Wild and of VeRi-776, `import-release` of a T2I-VeRW release, where the id is the file stem),
and a person-search import replaces every other character by '-'. The tests at the end pin each of these."""

from __future__ import annotations

import json
import shutil
from xml.sax.saxutils import quoteattr

import pytest
from click.testing import CliRunner
from markdown_it import MarkdownIt
from PIL import Image

from t2iverw.build import BuildDir
from t2iverw.cli import cli
from t2iverw.demo import write_truth_parts
from t2iverw.runner import open_log
from t2iverw.storage import read_jsonl
from tests.person_search import write_person_set
from tests.release.conftest import ANNOTATION_FILES, write_release

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


def test_ids_holding_html_are_refused_by_import_release(tmp_path):
    """A T2I-VeRW image id is its file stem, so a hostile stem is refused like a hostile `index` line. The
    `<script>` payload cannot be one stem (its `/` makes a folder), so its file is named by the part after it."""
    root = tmp_path / "T2I_VeRi_new"
    records = write_release(root, ids=4, per_id=(2, 2), copies=False)["records"]
    hostile = {0: f"image/{IMG}0.jpg", 1: f"image/{SCRIPT}.jpg", 2: "image/newline\n.jpg"}  # stems: IMG+0, script>, newline\n
    for n, path in hostile.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / records[n]["file_path"]).rename(root / path)
        records[n]["file_path"] = path
    (root / ANNOTATION_FILES["T2I_VeRi_new"]).write_text(json.dumps(records))
    result = CliRunner().invoke(cli, ["import-release", str(root), "--out", str(tmp_path / "build")])
    assert result.exit_code == 0, result.output
    reasons = {r["record"]: r["reason"] for r in read_jsonl(tmp_path / "build" / "rejected.jsonl")}
    assert set(reasons) == set(hostile)
    for n, stem in zip(hostile, (f"{IMG}0", "script>", "newline\n")):
        assert reasons[n] == (f"record {n}: image id {stem!r} (the file stem of file_path) is not of letters, "
                              "digits, '_' and '-'")
    ids = BuildDir.open(tmp_path / "build").images(["image_id"]).column("image_id").to_pylist()
    assert sorted(ids) == sorted(r["file_path"][len("image/"):-len(".jpg")] for r in records[3:])  # the rest kept


def test_ids_holding_html_are_refused_by_index_of_veri776(tmp_path):
    """VeRi-776 takes its ids from name_*.txt and the labels' vehicleID, not from vehicle_info.txt: the same
    rule holds there (a `../` name would also have left image_train/)."""
    root = tmp_path / "VeRi"
    good, bad_name, bad_vehicle = "0002_c001_00000010_0.jpg", f"0002_c002{IMG}.jpg", "0004_c003_00000030_0.jpg"
    for name in (good, bad_name, bad_vehicle):
        (root / "image_train").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "image_train" / name, format="JPEG")
    (root / "name_train.txt").write_text("\n".join((good, bad_name, bad_vehicle)) + "\n")
    items = [(good, "0002"), (bad_name, "0002"), (bad_vehicle, SCRIPT)]
    (root / "train_label.xml").write_text('<?xml version="1.0" encoding="utf-8"?>\n<TrainingImages><Items>\n' + "\n".join(
        f'<Item imageName={quoteattr(name)} vehicleID={quoteattr(vid)} cameraID="c001" colorID="1" typeID="1"/>'
        for name, vid in items) + "\n</Items></TrainingImages>\n")
    (root / "list_color.txt").write_text("1 yellow\n")
    (root / "list_type.txt").write_text("1 sedan\n")
    result = CliRunner().invoke(cli, ["index", str(root), "--out", str(tmp_path / "build")])
    assert result.exit_code == 0, result.output
    ids = BuildDir.open(tmp_path / "build").images(["image_id", "vehicle_id"]).to_pylist()
    assert ids == [{"image_id": good[:-4], "vehicle_id": "0002"}]
    reasons = {r["image"]: r["reason"] for r in read_jsonl(tmp_path / "build" / "rejected.jsonl")}
    assert set(reasons) == {bad_name, bad_vehicle}
    assert reasons[bad_name].startswith("malformed id:") and repr(bad_name[:-4]) in reasons[bad_name]
    assert reasons[bad_vehicle].startswith("malformed id:") and repr(SCRIPT) in reasons[bad_vehicle]
    assert all("is not of letters, digits, '_' and '-'" in r for r in reasons.values())


def test_person_search_ids_holding_html_become_plain_ids(tmp_path):
    """A person-search image id is its path below imgs/ with every character outside [A-Za-z0-9_-] made '-'
    (CUHK-PEDES names hold dots and folders), so markup in a file name reaches no page as markup."""
    written = write_person_set(tmp_path, "rstpreid")
    root, records = written["root"], written["records"]
    hostile = f"Market/{IMG}.jpg"
    (root / "imgs" / records[0]["img_path"]).rename(root / "imgs" / hostile)
    records[0]["img_path"] = hostile
    (root / "data_captions.json").write_text(json.dumps(records))
    result = CliRunner().invoke(cli, ["import-release", str(root), "--out", str(tmp_path / "build")])
    assert result.exit_code == 0, result.output
    ids = BuildDir.open(tmp_path / "build").images(["image_id"]).column("image_id").to_pylist()
    assert "Market__---img-src-x-onerror--window-pwned-2--" in ids  # IMG written out by hand: `"><` is ---
    assert all(set(i) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") for i in ids)
