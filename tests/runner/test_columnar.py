"""The columnar latest records equal a brute-force pick of the greatest (t, run, seq) over every log."""

from __future__ import annotations

import json
import random

import pyarrow as pa

from t2iverw.runner.columnar import latest_columns
from t2iverw.runner.records import latest


def _write(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"torn": ')


def test_latest_columns_equal_a_brute_force_pick(tmp_path, monkeypatch):
    import t2iverw.runner.columnar as columnar

    monkeypatch.setattr(columnar, "CHUNK", 7)  # several Arrow chunks, with differing dictionaries
    rng = random.Random(3)
    logs = ["main", "shard-00000-of-00002", "shard-00001-of-00002", "import", "review-ann", "old"]  # old: not read
    every = []
    for log in logs:
        recs = []
        for seq in range(40):
            recs.append({"image_id": f"{rng.randrange(25):04d}", "t": rng.randrange(6), "run": rng.choice("ab"),
                         "seq": rng.randrange(4), "status": rng.choice(["ok", "failed", "rejected"]),
                         "image_sha256": rng.choice([None, "x", "y"]), "log_name": log, "n": seq})
        _write(tmp_path / "captions" / f"{log}.jsonl", recs)
        every += [] if log == "old" else recs
    found = latest_columns(tmp_path, "captions", {"sha": lambda r: r.get("image_sha256")})
    order = sorted(every, key=lambda r: r["log_name"])  # logs are read in name order: the first of equal keys stays
    brute: dict[str, dict] = {}
    for rec in order:
        key = (rec["t"], rec["run"], rec["seq"])
        old = brute.get(rec["image_id"])
        if old is None or key > (old["t"], old["run"], old["seq"]):
            brute[rec["image_id"]] = rec
    ids = found.table["image_id"].to_pylist()
    assert ids == sorted(brute)
    records = dict(zip(ids, found.fetch(range(len(ids)))))
    assert records == brute == latest(tmp_path, "captions")
    assert found.table["sha"].to_pylist() == [brute[i]["image_sha256"] for i in ids]
    ok = found.ok()
    assert ok.table["image_id"].to_pylist() == sorted(i for i, r in brute.items() if r["status"] == "ok")
    pos = found.positions(pa.array(["0003", "nope", "0001"]))
    assert [r and r["image_id"] for r in found.fetch(pos.to_pylist())] == [
        "0003" if "0003" in brute else None, None, "0001" if "0001" in brute else None]


def test_no_logs_is_an_empty_table(tmp_path):
    found = latest_columns(tmp_path, "parts", {"sha": lambda r: r.get("image_sha256")})
    assert len(found) == 0 and len(found.ok()) == 0 and found.fetch([None]) == [None]
