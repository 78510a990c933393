"""`t2iverw leaderboard`: the paper's published rows, hand-written runs, and the page in headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from t2iverw.cli import cli
from t2iverw.evaluation.inputs import ground_truth
from t2iverw.leaderboard.published import published_tables

ROOT = Path(__file__).resolve().parents[2]
PAPER = [ROOT.parent / "shared" / "paper.md", ROOT.parents[1] / "shared" / "paper.md", Path("/work/shared/paper.md")]
INJECTED = "<script>window.pwned=1</script>"


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["leaderboard", *map(str, args)])
    return result.exit_code, result.output


def paper_tables() -> dict[str, list[list[str]]]:
    """Table III / IV rows of paper.md as text cells, parsed here without the package's code."""
    path = next((p for p in PAPER if p.is_file()), None)
    if path is None:
        pytest.skip("needs the paper's text, shared/paper.md beside the repository")
    text = path.read_text(encoding="utf-8")
    out = {}
    for name in ("III", "IV"):
        block = re.search(rf"\(Table {name}\)[^\n]*\n\|[^\n]*\n\|[-| ]+\n((?:\|[^\n]*\n)+)", text).group(1)
        out[name] = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines()]
    return out


def write_run(folder: Path, ranks: dict, summary: dict | None) -> Path:
    folder.mkdir(parents=True)
    meta = {"config": (summary or {}).get("config")} if summary else {}
    (folder / "ranks.json").write_text(json.dumps({"meta": meta, "ranks": ranks}))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def runs(export_dir: Path, tmp_path: Path, config_name: str = "pfcvr") -> list[Path]:
    """good: the truth ranked first (selected on val); rnd: random, selected on TEST; old: no summary.json."""
    truth = ground_truth(export_dir)
    label = dict(zip(truth.gallery_ids, truth.gallery_labels.tolist()))
    rng = np.random.default_rng(0)
    good = {q: sorted(truth.gallery_ids, key=lambda g: label[g] != v) for q, v in
            zip(truth.query_ids, truth.query_labels.tolist())}

    def shuffled() -> dict:
        return {q: rng.permutation(truth.gallery_ids).tolist() for q in truth.query_ids}

    summary = {"model": "pfcvr", "config": config_name, "config_fingerprint": "sha256:00aa", "dataset": str(export_dir),
               "dataset_fingerprint": "sha256:1234", "selection": "val", "selected_on_test": False,
               "parameters": 149_000_000, "train_seconds": 3725.0, "hardware": "cuda NVIDIA H100 x1"}
    return [write_run(tmp_path / "good", good, summary),
            write_run(tmp_path / "rnd", shuffled(), summary | {"selection": "test", "selected_on_test": True,
                                                                "model": "clip", "config": "clip-tiny"}),
            write_run(tmp_path / "old", shuffled(), None)]


def test_published_rows_equal_the_paper_and_stand_alone(tmp_path):
    expected = paper_tables()
    got = {t["table"]: [[r["method"], r["venue"], *(str(r[m]) for m in ("R1", "R5", "R10", "mAP"))]
                        for r in t["rows"]] for t in published_tables()}
    assert got == expected
    assert {t["table"]: t["dataset"] for t in published_tables()} == {"III": "T2I-VeRI", "IV": "T2I-VeRW"}
    code, out = run("--out", tmp_path / "lb")
    assert code == 0, out
    md = (tmp_path / "lb" / "LEADERBOARD.md").read_text()
    page = (tmp_path / "lb" / "leaderboard.html").read_text()
    for rows in expected.values():
        for row in rows:
            assert "| " + " | ".join(row) + " |" in md
            assert f"<td>{row[0]}</td>" in page
    assert md.count("published, not reproduced here") == 2 and "No measured runs" in md
    assert (tmp_path / "lb" / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"


def test_measured_rows_with_intervals_test_selection_flag_and_significance(export_dir, tmp_path):
    good, rnd, old = runs(export_dir, tmp_path)
    code, out = run(good, rnd, old, "--dataset", export_dir, "--out", tmp_path / "lb", "--unit", "query",
                    "--resamples", 400)
    assert code == 0, out
    md = (tmp_path / "lb" / "LEADERBOARD.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "100.00 [100.00, 100.00]" in rows["good"] and "| val |" in rows["good"]
    assert "3725" not in rows["good"] and "1 h 02 min" in rows["good"] and "149.0M" in rows["good"]
    assert "**test** (selected on the TEST split)" in rows["rnd"] and "TEST" not in rows["good"]
    assert "(differs from this dataset)" in rows["good"] and "differs" not in rows["old"]
    assert rows["old"].count("—") >= 5  # a run without summary.json: model, config, fingerprints, ... unknown
    mAP = re.search(r"\| (\d+\.\d\d) \[(\d+\.\d\d), (\d+\.\d\d)\]", rows["rnd"].split(" | ", 6)[6])
    assert mAP and float(mAP.group(2)) <= float(mAP.group(1)) <= float(mAP.group(3)) < 100
    line = next(line for line in md.splitlines() if line.startswith("Significant differences"))
    assert "good > rnd in mAP" in line and "good > old in mAP" in line and "rnd > old" not in line
    assert "old > rnd" not in line
    page = (tmp_path / "lb" / "leaderboard.html").read_text()
    assert page.count('class="test-selected"') == 1 and "selected on the TEST split" in page


def test_runs_need_the_dataset(export_dir, tmp_path):
    good, *_ = runs(export_dir, tmp_path)
    code, out = run(good, "--out", tmp_path / "lb")
    assert code == 2 and out.startswith("Error: ") and "--dataset" in out
    assert not (tmp_path / "lb").exists()


@pytest.fixture
def chromium_page(browser):
    """A page of the session's headless Chromium (tests/conftest.py)."""
    return browser.new_page()


def test_run_values_are_escaped_in_the_browser(export_dir, tmp_path, chromium_page):
    good, rnd, _ = runs(export_dir, tmp_path, config_name=INJECTED)
    code, out = run(good, rnd, "--dataset", export_dir, "--out", tmp_path / "lb", "--resamples", 100)
    assert code == 0, out
    md = (tmp_path / "lb" / "LEADERBOARD.md").read_text()
    assert INJECTED not in md and "&lt;script&gt;window.pwned=1&lt;/script&gt;" in md
    chromium_page.goto((tmp_path / "lb" / "leaderboard.html").as_uri())
    assert chromium_page.evaluate("typeof window.pwned") == "undefined"
    assert chromium_page.locator("#measured td.config").first.inner_text() == INJECTED
    assert chromium_page.evaluate("document.getElementById('chart').naturalWidth") > 100  # the embedded PNG decodes
