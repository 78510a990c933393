"""The search page as users run it: `t2iverw search --serve` in a subprocess, driven by a real headless chromium."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from t2iverw.cli import cli
from t2iverw.search.index import open_searcher, split_queries
from t2iverw.training.config import TINY_CONFIG, load_config
from t2iverw.training.engine import train

HOSTILE = '<img src=x onerror="window.pwned=1"><b id="injected">bold</b>'


@pytest.fixture(scope="module")
def served_run(export_dir, tmp_path_factory):
    """A short SDM + ID run of the tiny config, its gallery already cached (the page must not re-encode)."""
    run = tmp_path_factory.mktemp("search-page") / "run"
    train(load_config(TINY_CONFIG, {"plfa": False, "bmria": False, "epochs": 12}), export_dir, run)
    open_searcher(run, export_dir, device="cpu")
    return run


def serve(start_served, run, dataset, *args: str):
    return start_served("search", str(run), "--dataset", str(dataset), "--serve", "--port", "0", "--device", "cpu",
                        *args)


def hits(page) -> list[str]:
    return page.eval_on_selector_all("#results .hit", "els => els.map(e => e.dataset.imageId)")


def test_query_caption_and_failures(served_run, export_dir, start_served, page):
    app = serve(start_served, served_run, export_dir, "--top", "6")
    assert "cache: loaded" in "".join(app.output)
    page.goto(app.url)
    page.wait_for_function("document.querySelectorAll('#captions li').length > 0")

    # a typed description: the thumbnails are the CLI's top 6, in order, each with its score and part layers
    query = "A white sedan with a sunroof"
    expected = json.loads(CliRunner().invoke(cli, ["search", str(served_run), "--dataset", str(export_dir), "--json",
                                                   "--top", "6", "--device", "cpu", query]).stdout)
    page.fill("#query", query)
    page.press("#query", "Enter")
    page.wait_for_function("document.querySelectorAll('#results .hit').length === 6")
    assert hits(page) == [h["image_id"] for h in expected]
    scores = page.eval_on_selector_all("#results .hit .score", "els => els.map(e => e.textContent)")
    assert scores == [f"score {h['score']:.4f}" for h in expected]
    page.wait_for_function("document.querySelectorAll('#results .hit img.layer').length === 36")
    page.wait_for_function("[...document.querySelectorAll('#results img.layer')].every(i => i.complete && i.naturalWidth > 0)")

    # a test caption picked from the list: the top hits of its own vehicle and all its images are marked
    q = split_queries(export_dir)
    pick = 5
    page.click(f"#captions li[data-index='{pick}']")
    page.wait_for_function(f"document.getElementById('heading').textContent.includes({json.dumps(q.ids[pick])})")
    marked = page.eval_on_selector_all("#results .hit.correct", "els => els.map(e => e.dataset.imageId)")
    test = pa.concat_tables([pq.read_table(f, columns=["image_id", "vehicle_id"])
                             for f in sorted((export_dir / "data").glob("test-*.parquet"))]).to_pylist()
    vehicle = {r["image_id"]: r["vehicle_id"] for r in test}
    assert marked == [i for i in hits(page) if vehicle[i] == q.labels[pick]]
    truth = page.eval_on_selector_all("#truth .hit", "els => els.map(e => e.dataset.imageId)")
    assert sorted(truth) == sorted(i for i, v in vehicle.items() if v == q.labels[pick])

    # the failure browser: the worst queries by the rank of their first correct image, from a full ranking here
    searcher = open_searcher(served_run, export_dir, device="cpu")
    features = searcher.encode_texts(q.texts).numpy()
    scores = features @ searcher.gallery.numpy().T
    first = []
    for row, label in zip(scores, q.labels):
        order = np.argsort(-row, kind="stable")
        first.append(next(r for r, j in enumerate(order) if searcher.vehicle_ids[j] == label))
    worst = sorted(range(len(first)), key=lambda k: (-first[k], k))[:20]
    shown = page.eval_on_selector_all("#failures li", "els => els.map(e => Number(e.dataset.index))")
    assert [first[k] for k in shown] == [first[k] for k in worst]  # same ranks, worst first
    top = page.locator("#failures li").first
    assert top.locator(".text").text_content() == q.texts[shown[0]]
    assert top.locator(".first").text_content().endswith(f"at rank {first[shown[0]] + 1}")
    assert top.locator(".thumbs img").count() == 6  # the top 5 and the first correct one


@pytest.fixture
def hostile_export(export_dir, tmp_path):
    """The export with an HTML caption on its first test image."""
    out = tmp_path / "export"
    shutil.copytree(export_dir, out)
    shard = sorted((out / "data").glob("test-*.parquet"))[0]
    table = pq.read_table(shard)
    captions = table.column("captions").to_pylist()
    captions[0] = [HOSTILE]
    table = table.set_column(table.schema.get_field_index("captions"), "captions",
                             pa.array(captions, type=table.schema.field("captions").type))
    table = table.set_column(table.schema.get_field_index("caption"), "caption",
                             pa.array([HOSTILE, *table.column("caption").to_pylist()[1:]]))
    pq.write_table(table, shard)
    return out


def test_text_is_escaped_and_the_token_is_required(tiny_clip_dir, hostile_export, start_served, page):
    app = serve(start_served, f"clip:{tiny_clip_dir}", hostile_export, "--token", "s3cret")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(app.base + "/api/info", timeout=30)
    assert refused.value.code == 401  # the review app's gate: no token, no answer
    page.goto(app.url)
    page.wait_for_function("document.querySelectorAll('#captions li').length > 0")
    assert HOSTILE in page.eval_on_selector_all("#captions li", "els => els.map(e => e.textContent)")
    page.fill("#query", HOSTILE)
    page.press("#query", "Enter")
    page.wait_for_function("document.getElementById('heading').textContent.startsWith('Top ')")
    assert page.locator("#heading").text_content().endswith(HOSTILE)
    assert page.locator("#injected").count() == 0 and page.locator("img[src='x']").count() == 0
    assert page.evaluate("window.pwned") is None
