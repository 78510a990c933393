"""The review app in a real headless chromium: keyboard decisions land in the build and the export."""

from __future__ import annotations

import io
import json
import signal

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageFilter

from t2iverw.build import BuildDir
from t2iverw.caption.backends import template_caption
from t2iverw.constants import PARTS
from t2iverw.export import export_dataset
from t2iverw.runner import open_log
from t2iverw.segment.show import ALPHA, COLOURS
from t2iverw.synth import read_truth

EDITED = "A hand-checked caption: a white sedan with round headlights, five-spoke wheels, a flat roof and tinted windows."


def shown(page) -> str:
    """The image id the page shows once it has settled."""
    page.wait_for_function("document.getElementById('title').textContent.includes('vehicle')")
    return page.evaluate("document.getElementById('title').textContent.split(' ')[0]")


def wait_for_next(page, previous: str) -> str:
    page.wait_for_function(f"!document.getElementById('title').textContent.startsWith({json.dumps(previous + ' ')})")
    return shown(page)


def rows_of(build) -> dict[str, dict]:
    return {r["image_id"]: r for r in pq.read_table(build / "images.parquet").to_pylist()}


def test_edit_accept_reject_by_keyboard_persist(review_build, start_app, page, tmp_path):
    rows = rows_of(review_build)
    app = start_app(review_build, "--reviewer", "alice")
    page.goto(app.url)
    first = shown(page)
    assert page.locator("#count-total").text_content() == str(len(rows))
    assert page.locator("#count-reviewed").text_content() == "0"

    # edit with the keyboard and save
    page.keyboard.press("e")
    page.keyboard.press("Control+a")
    page.keyboard.type(EDITED)
    page.keyboard.press("Control+Enter")
    second = wait_for_next(page, first)
    # accept one, reject one
    page.keyboard.press("a")
    third = wait_for_next(page, second)
    page.keyboard.press("r")
    fourth = wait_for_next(page, third)
    assert len({first, second, third, fourth}) == 4
    page.wait_for_function("document.getElementById('count-reviewed').textContent === '3'")

    # reload on the edited image: the edit is still there
    page.keyboard.press("/")
    page.keyboard.type(first)
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.getElementById('title').textContent.startsWith({json.dumps(first + ' ')})")
    page.reload()
    assert shown(page) == first
    assert page.locator("#caption").input_value() == EDITED
    assert page.locator("#review-status").text_content() == "edited"
    assert page.locator("#count-reviewed").text_content() == "3"

    # the build's records
    latest = BuildDir.open(review_build).latest("captions")
    edit, accept, reject = latest[first], latest[second], latest[third]
    assert edit["source"] == "human" and edit["reviewer"] == "alice" and edit["action"] == "edit"
    assert edit["text"] == EDITED and edit["status"] == "ok"
    assert edit["edited_from"] == template_caption(rows[first])
    assert accept["source"] == "human" and accept["action"] == "accept" and accept["status"] == "ok"
    assert accept["text"] == accept["edited_from"] == template_caption(rows[second])
    assert reject["source"] == "human" and reject["action"] == "reject" and reject["status"] == "rejected"
    assert latest[fourth].get("source", "model") != "human"
    assert all(r.get("time") for r in (edit, accept, reject))

    # the export's caption_source
    export_dataset(review_build, tmp_path / "ds", include_images=False)
    exported = {r["image_id"]: r for f in sorted((tmp_path / "ds" / "data").glob("*.parquet"))
                for r in pq.read_table(f, columns=["image_id", "caption", "caption_source"]).to_pylist()}
    assert exported[first]["caption_source"] == "human-edited" and exported[first]["caption"] == EDITED
    assert exported[second]["caption_source"] == "human-accepted"
    assert exported[third]["caption_source"] is None and exported[third]["caption"] is None  # back to `caption`
    assert exported[fourth]["caption_source"] == "model"


def _screenshot(page) -> np.ndarray:
    page.wait_for_function("[...document.querySelectorAll('#stage img')].every(i => i.complete && i.naturalWidth > 0)")
    return np.asarray(Image.open(io.BytesIO(page.locator("#stage").screenshot())).convert("RGB"), dtype=float)


def test_overlay_colours_the_mask_pixels(review_build, start_app, page):
    rows = rows_of(review_build)
    app = start_app(review_build, "--reviewer", "alice")
    page.goto(app.url)
    image_id = shown(page)
    on = _screenshot(page)
    page.keyboard.press("o")
    page.wait_for_function("document.getElementById('layers').classList.contains('off')")
    off = _screenshot(page)
    assert on.shape == off.shape

    row = rows[image_id]
    truth = read_truth(BuildDir.open(review_build).source_root, f"{row['vehicle_id']}/{image_id}")
    size = (on.shape[1], on.shape[0])
    masks = np.stack([np.asarray(Image.fromarray(m).resize(size, Image.NEAREST)) for m in truth])
    union = masks.any(axis=0)
    changed = np.abs(on - off).sum(axis=2) > 24
    assert union.mean() > 0.05
    # the overlay is drawn exactly where the parts are (up to the scaled edges): mask pixels coloured,
    # background untouched
    assert (changed & grow(union)).sum() / changed.sum() > 0.98
    assert (changed & shrink(union)).sum() / shrink(union).sum() > 0.98
    # and in each part's own colour: the wheels' pixels are the photo blended with the wheels' red
    wheel = PARTS.index("wheels")
    wheels = shrink(masks[wheel] & ~np.delete(masks, wheel, axis=0).any(axis=0))
    expected = (1 - ALPHA) * off[wheels] + ALPHA * COLOURS[wheel] * 255
    assert wheels.sum() > 100
    assert np.median(np.abs(on[wheels] - expected)) < 12

    # a part can be toggled on its own: 3 hides the wheels only
    page.keyboard.press("o")
    page.keyboard.press("3")
    page.wait_for_function("document.querySelectorAll('#layers img.off').length === 1")
    no_wheels = _screenshot(page)
    gone = np.abs(on - no_wheels).sum(axis=2) > 24
    assert gone.sum() > 100 and (gone & grow(masks[wheel])).sum() / gone.sum() > 0.98


def grow(mask: np.ndarray, px: int = 5) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(px))) > 0


def shrink(mask: np.ndarray, px: int = 5) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(px))) > 0


def test_an_unsaved_edit_survives_closing_the_app_and_the_browser(review_build, start_app, browser):
    app = start_app(review_build, "--reviewer", "bob")
    context = browser.new_context()
    page = context.new_page()
    page.goto(app.url)
    image_id = shown(page)
    page.keyboard.press("e")
    page.keyboard.type(" Mid-edit words.")
    drafts = review_build / "review" / "drafts-bob.json"
    for _ in range(100):  # the page sends its draft a moment after the last keystroke
        if drafts.exists() and "Mid-edit words." in drafts.read_text():
            break
        page.wait_for_timeout(100)
    assert "Mid-edit words." in json.loads(drafts.read_text())[image_id]["text"]
    # the app is killed and the browser closed without saving
    app.stop(signal.SIGKILL)
    context.close()

    again = start_app(review_build, "--reviewer", "bob")  # a new port: a new origin, no shared browser storage
    fresh = browser.new_context().new_page()
    fresh.goto(f"{again.url}#{image_id}")
    assert shown(fresh) == image_id
    assert fresh.locator("#caption").input_value().endswith(" Mid-edit words.")
    assert "draft restored" in fresh.locator("#banner").text_content()
    assert not BuildDir.open(review_build).latest("captions")[image_id].get("source") == "human"
    fresh.context.close()


def test_flag_filter_and_vehicle_search(review_build, start_app, page):
    rows = rows_of(review_build)
    ids = sorted(rows)
    short = ids[5]
    with open_log(review_build, "captions", "main", source="model", settings={"backend": "test"}) as log:
        log.append([{"image_id": short, "status": "ok", "text": "A car."}])
    app = start_app(review_build, "--reviewer", "carol", "--only", "flagged")
    page.goto(app.url)
    assert shown(page) == short
    assert page.locator("#count-flagged").text_content() == "1"
    assert "too_short" in page.locator("#flags").text_content()
    vehicle = rows[ids[-1]]["vehicle_id"]
    page.keyboard.press("/")
    page.keyboard.type(vehicle)
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.getElementById('title').textContent.endsWith({json.dumps('vehicle ' + vehicle)})")
    same = sorted(i for i, r in rows.items() if r["vehicle_id"] == vehicle)
    assert shown(page) == same[0]
    assert page.locator("#position").text_content() == f"1 of {len(same)}"
