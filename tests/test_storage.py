import json

from t2iverw.storage import JsonlWriter, read_jsonl, write_json


def test_torn_last_line_is_ignored_and_repaired(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps({"a": 1}) + "\n" + json.dumps({"a": 2}) + "\n" + '{"a": 3, "tor')
    assert [r["a"] for r in read_jsonl(path)] == [1, 2]
    with JsonlWriter(path) as log:  # reopening cuts the torn tail so the next record starts clean
        log.write({"a": 4})
    assert [r["a"] for r in read_jsonl(path)] == [1, 2, 4]


def test_atomic_write_leaves_no_temp_files(tmp_path):
    write_json(tmp_path / "x.json", {"k": 1})
    write_json(tmp_path / "x.json", {"k": 2})
    assert json.loads((tmp_path / "x.json").read_text()) == {"k": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
