"""`import-release --format cuhk-pedes | icfg-pedes | rstpreid`: each model's home benchmark as a build.

The sets are written by tests/person_search.py, which shares no code with the reader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner

from t2iverw.cli import cli
from tests.person_search import LAYOUTS, write_person_set


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code in (0, 2), result.output  # 1 would be a traceback
    return result.exit_code, result.output


def one_error(code: int, out: str, *needles: str) -> bool:
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    return code == 2 and len(errors) == 1 and all(n in errors[0] for n in needles) and "Traceback" not in out


@pytest.mark.parametrize("fmt", LAYOUTS)
@pytest.mark.parametrize("named", [False, True], ids=["auto", "named"])
def test_a_person_set_round_trips_with_its_ids_splits_and_captions(fmt, named, tmp_path):
    written = write_person_set(tmp_path, fmt)
    build, ds = tmp_path / "build", tmp_path / "ds"
    code, out = invoke("import-release", written["root"], "--out", build, *(["--format", fmt] if named else []))
    assert code == 0, out
    assert f"from {LAYOUTS[fmt][0]} ({LAYOUTS[fmt][1]})" in out
    code, out = invoke("export", build, "--out", ds)
    assert code == 0, out
    code, out = invoke("export", build, "--out", tmp_path / "pfcvr", "--format", "pfcvr")  # no part files to write
    assert one_error(code, out, LAYOUTS[fmt][0], "--format pfcvr") and not (tmp_path / "pfcvr").exists()

    loaded = datasets.load_dataset(str(ds))
    assert set(loaded) == {"train", "test"}
    by_path = {f"imgs/{r[written['path_field']]}": r for r in written["records"]}
    seen = set()
    for split in ("train", "test"):
        for row in loaded[split]:
            rec = by_path[row["path"]]
            assert rec["split"] == split
            assert row["image_id"] == written["expected_ids"][rec[written["path_field"]]]
            assert row["vehicle_id"] == str(rec["id"])
            assert row["captions"] == rec["captions"] and row["caption"] == rec["captions"][0]
            assert row["part_grid"] is None and row["image"] is not None
            seen.add(row["path"])
    kept = {p for p, r in by_path.items() if r["split"] in ("train", "test")}
    assert seen == kept  # every train and test image, once (one stem recurs in three source folders)

    # validation records: left out (a build holds train and test), each named in rejected.jsonl
    rejected = [json.loads(line) for line in (build / "rejected.jsonl").read_text().splitlines()]
    val = {p for p, r in by_path.items() if r["split"] == "val"}
    assert {r["file_path"] for r in rejected} == val and all("'val'" in r["reason"] for r in rejected)
    split = json.loads((build / "split.json").read_text())
    assert split["test_ids"] == sorted({str(r["id"]) for r in written["records"] if r["split"] == "test"})
    assert split["published"]["missing_images"] == len(val)  # the images the file lists and the build lacks


def test_train_predict_eval_compare_work_unchanged_on_a_person_set(tmp_path):
    written = write_person_set(tmp_path, "rstpreid", persons=12)
    build, ds = tmp_path / "build", tmp_path / "ds"
    assert invoke("import-release", written["root"], "--out", build)[0] == 0
    assert invoke("export", build, "--out", ds)[0] == 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for name in ("a", "b"):
        code, out = invoke("train", "--model", "irra", "--config", "tiny", "--dataset", ds, "--out", tmp_path / name,
                           "--epochs", "2", "--set", f"seed={ord(name)}")
        assert code == 0, out
        code, out = invoke("predict", "--run", tmp_path / name, "--dataset", ds, "--out", tmp_path / f"{name}.json",
                           "--num-workers", "0")
        assert code == 0, out
    code, out = invoke("eval", ds, "--pred", tmp_path / "a.json", "--json")
    assert code == 0 and json.loads(out)["queries"] == 2 * sum(r["split"] == "test" for r in written["records"]), out
    code, out = invoke("compare", ds, f"a={tmp_path / 'a.json'}", f"b={tmp_path / 'b.json'}", "--json",
                       "--resamples", "200")
    assert code == 0 and {p["metric"] for p in json.loads(out)["pairs"]} >= {"R1", "mAP"}, out


def _rewrite(path: Path, mutate) -> None:
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))


def test_malformed_person_files(tmp_path):
    written = write_person_set(tmp_path, "rstpreid")
    root, annotations = written["root"], written["root"] / LAYOUTS["rstpreid"][1]
    good = annotations.read_text()

    annotations.write_text(good[:-40])  # a truncated file: one Error: line, nothing built
    code, out = invoke("import-release", root, "--out", tmp_path / "b1")
    assert one_error(code, out, "data_captions.json", "not valid JSON")
    assert [p.name for p in (tmp_path / "b1").iterdir()] == [".index.lock"]  # only the writers' lock
    annotations.write_text(json.dumps({"annotations": json.loads(good)}))
    code, out = invoke("import-release", root, "--out", tmp_path / "b2")
    assert one_error(code, out, "must hold a JSON list")

    annotations.write_text(good)  # the wrong format named, --veri-wild on a person set
    code, out = invoke("import-release", root, "--out", tmp_path / "b3", "--format", "cuhk-pedes")
    assert one_error(code, out, "reid_raw.json")
    code, out = invoke("import-release", root, "--out", tmp_path / "b3", "--veri-wild", tmp_path)
    assert one_error(code, out, "--veri-wild", "RSTPReid")
    assert not (tmp_path / "b3").exists()

    outside = tmp_path / "outside.jpg"
    outside.write_bytes((root / "imgs" / written["records"][0]["img_path"]).read_bytes())

    def hostile(data):
        data[0]["img_path"] = "../../outside.jpg"  # leaves the root
        data[1]["file_path"] = data[1].pop("img_path")  # CUHK-PEDES's field name in an RSTPReid file
        data[2]["id"] = 3.5
        data[3]["captions"] = "not a list"
        data[4]["img_path"] = str(outside)  # absolute
        data[5] = dict(data[6])  # a duplicate record

    _rewrite(annotations, hostile)
    code, out = invoke("import-release", root, "--out", tmp_path / "b4")
    assert code == 0, out
    reasons = {r["record"]: r["reason"] for r in map(json.loads, (tmp_path / "b4" / "rejected.jsonl").open())}
    assert "not a path inside" in reasons[0] and "has no 'img_path'" in reasons[1]
    assert "is not an integer" in reasons[2] and "captions must be a list" in reasons[3]
    assert "not a path inside" in reasons[4] and "duplicate" in reasons[6]
    rows = datasets.Dataset.from_parquet(str(tmp_path / "b4" / "images.parquet"))
    assert not any(".." in p or p.startswith("/") for p in rows["path"])
