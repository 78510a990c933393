"""Record order, exact log names, torn tails and damaged logs."""

from __future__ import annotations

import json
import time

import pytest

from t2iverw.build import BuildDir
from t2iverw.errors import T2IError
from t2iverw.runner import open_log, pending

SETTINGS = {"model": "m"}


def _ids(build_dir) -> list[str]:
    return BuildDir.open(build_dir).images(["image_id"]).column("image_id").to_pylist()


def test_latest_is_decided_by_the_records_not_by_file_names(build_dir):
    a, b = _ids(build_dir)[:2]
    # written first = older. "shard-..." sorts after "main", so a name-order rule would pick the older record.
    with open_log(build_dir, "parts", "shard-00000-of-00002", source="model", settings=SETTINGS) as log:
        log.append([{"image_id": a, "status": "ok"}, {"image_id": b, "status": "failed", "reason": "x"}])
    with open_log(build_dir, "parts", "main", source="model", settings=SETTINGS) as log:
        log.append([{"image_id": a, "status": "failed", "reason": "y"}, {"image_id": b, "status": "ok"}])
    latest = BuildDir.open(build_dir).latest("parts")
    assert latest[a]["status"] == "failed" and latest[a]["reason"] == "y"
    assert latest[b]["status"] == "ok"
    todo = {i.image_id for i in pending(BuildDir.open(build_dir), "parts", SETTINGS).items}
    assert b not in todo and a not in todo  # b is done; a failed (retried only with retry_failed)
    retry = {i.image_id for i in pending(BuildDir.open(build_dir), "parts", SETTINGS, retry_failed=True).items}
    assert a in retry and b not in retry


def test_a_writer_stamps_above_every_record_it_has_seen_even_with_a_clock_behind(build_dir, monkeypatch):
    a = _ids(build_dir)[0]
    with open_log(build_dir, "captions", "main", source="model", settings=SETTINGS) as log:
        first = log.append([{"image_id": a, "status": "ok", "text": "first"}])[0]
    # another machine whose clock is an hour behind redoes the image afterwards
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() - 3600 * 10**9)
    with open_log(build_dir, "captions", "shard-00001-of-00004", source="model", settings=SETTINGS) as log:
        second = log.append([{"image_id": a, "status": "ok", "text": "second"}])[0]
    assert second["t"] > first["t"]
    assert BuildDir.open(build_dir).captions()[a]["text"] == "second"


def test_stray_files_beside_the_logs_are_never_read(build_dir):
    a = _ids(build_dir)[0]
    stray = json.dumps({"image_id": a, "status": "ok", "text": "stray", "t": 1, "run": "r", "seq": 1}) + "\n"
    (build_dir / "captions").mkdir()
    for name in ("captions/old.jsonl", "captions/main.jsonl.bak", "captions/main_v1.jsonl", "captions_old.jsonl",
                 "captions.jsonl"):
        (build_dir / name).write_text(stray)
    bd = BuildDir.open(build_dir)
    assert bd.latest("captions") == {}
    assert a in {i.image_id for i in pending(bd, "captions", SETTINGS).items}


def test_readers_skip_a_torn_tail_and_only_the_writer_repairs_it(build_dir):
    a, b = _ids(build_dir)[:2]
    with open_log(build_dir, "captions", "main", source="model", settings=SETTINGS) as log:
        log.append([{"image_id": a, "status": "ok", "text": "x"}])
    path = build_dir / "captions" / "main.jsonl"
    with path.open("a") as fh:
        fh.write('{"image_id": "' + b + '", "status": "o')  # a write cut short
    torn = path.read_bytes()
    assert set(BuildDir.open(build_dir).latest("captions")) == {a}
    assert path.read_bytes() == torn  # reading changed nothing
    with open_log(build_dir, "captions", "main", source="model", settings=SETTINGS) as log:
        log.append([{"image_id": b, "status": "ok", "text": "y"}])
    lines = path.read_text().splitlines()
    assert [json.loads(line)["image_id"] for line in lines] == [a, b]


def test_a_damaged_line_inside_a_log_is_one_clear_error(build_dir):
    a = _ids(build_dir)[0]
    with open_log(build_dir, "captions", "main", source="model", settings=SETTINGS) as log:
        log.append([{"image_id": a, "status": "ok", "text": "x"}])
    path = build_dir / "captions" / "main.jsonl"
    path.write_bytes(b'{"image_id": "1", "sta\n' + path.read_bytes())
    with pytest.raises(T2IError, match=r"main\.jsonl:1 is not a JSON record .*damaged") as err:
        BuildDir.open(build_dir).captions()
    assert "\n" not in str(err.value)


def test_records_carry_provenance_and_order(build_dir):
    bd = BuildDir.open(build_dir)
    rows = bd.images(["image_id", "sha256"]).to_pylist()[:3]
    with open_log(bd, "parts", "import", source="release", settings={"release": "T2I_VeRi_new"}) as log:
        recs = log.append({"image_id": r["image_id"], "status": "ok"} for r in rows)
    assert [r["seq"] for r in recs] == [1, 2, 3] and len({r["run"] for r in recs}) == 1
    assert [r["image_sha256"] for r in recs] == [r["sha256"] for r in rows]
    assert all(r["source"] == "release" and r["settings"] == {"release": "T2I_VeRi_new"} and len(r["fp"]) == 16
               for r in recs)
    assert recs[0]["t"] < recs[1]["t"] < recs[2]["t"]
    with pytest.raises(ValueError, match="not in"):
        with open_log(bd, "parts", "import", source="release", settings={}) as log:
            log.append([{"image_id": "no-such-image", "status": "ok"}])
    with pytest.raises(ValueError, match="not a record log name"):
        open_log(bd, "parts", "../escape", source="release", settings={}).__enter__()


def test_latest_with_fields_picks_the_same_records_and_keeps_only_those_keys(build_dir):
    a, b = _ids(build_dir)[:2]
    with open_log(build_dir, "captions", "shard-00000-of-00002", source="model", settings=SETTINGS) as log:
        log.append([{"image_id": a, "status": "ok", "text": "old", "usage": {"n": 1}},
                    {"image_id": b, "status": "ok", "text": "b1", "usage": {"n": 2}}])
    with open_log(build_dir, "captions", "main", source="model", settings=SETTINGS) as log:
        log.append([{"image_id": a, "status": "ok", "text": "new", "usage": {"n": 3}}])
    bd = BuildDir.open(build_dir)
    full, slim = bd.latest("captions"), bd.latest("captions", ("text", "settings"))
    assert {k: r["text"] for k, r in slim.items()} == {a: "new", b: "b1"}
    assert all("usage" not in r for r in slim.values()) and all("usage" in r for r in full.values())
    assert all(slim[k] == {f: v for f, v in full[k].items() if f in slim[k]} for k in full)
    assert slim[a]["settings"] == full[a]["settings"] and slim[a]["settings"] is slim[b]["settings"]  # one shared dict
