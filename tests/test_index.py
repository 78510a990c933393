import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from PIL import Image

from t2iverw.build import BuildDir
from t2iverw.errors import T2IError
from t2iverw.index import PROGRESS, build_index
from t2iverw.synth import write_sample


@pytest.fixture
def source(synth_root, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(synth_root, dst)
    return dst


def _info_lines(root):
    return (root / "train_test_split" / "vehicle_info.txt").read_text().splitlines()


def test_index_reads_every_image(synth_root, tmp_path):
    summary = build_index(synth_root, tmp_path / "b")
    table = BuildDir.open(tmp_path / "b").images().to_pylist()
    assert summary.images == len(_info_lines(synth_root)) - 1 == len(table)
    row = table[0]
    assert row["path"] == f"images/{row['vehicle_id']}/{row['image_id']}.jpg"
    assert row["width"] > 0 and row["height"] > 0 and len(row["sha256"]) == 64
    assert not (tmp_path / "b" / PROGRESS).exists()


def test_bad_inputs_are_rejected_with_reasons(source, tmp_path):
    lines = _info_lines(source)
    vid, img = lines[1].split(";")[0].split("/")
    (source / "images" / vid / f"{img}.jpg").unlink()  # missing file
    vid2, img2 = lines[2].split(";")[0].split("/")
    corrupt = source / "images" / vid2 / f"{img2}.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[: corrupt.stat().st_size // 2])  # truncated JPEG
    lines.insert(3, "garbage line without separators")
    (source / "train_test_split" / "vehicle_info.txt").write_text("\n".join(lines) + "\n")

    summary = build_index(source, tmp_path / "b")
    assert summary.images == len(lines) - 1 - 3
    assert summary.rejected == {"missing file": 1, "corrupt image": 1, "malformed metadata line": 1}
    rejected = [json.loads(x) for x in (tmp_path / "b" / "rejected.jsonl").read_text().splitlines()]
    reasons = " | ".join(r["reason"] for r in rejected)
    assert f"missing file images/{vid}/{img}.jpg" in reasons and f"corrupt image images/{vid2}/{img2}.jpg" in reasons
    assert "malformed metadata line 4" in reasons


def test_selection_is_reproducible(synth_root, tmp_path):
    a = build_index(synth_root, tmp_path / "a", limit_ids=5, max_per_id=2, seed=3)
    build_index(synth_root, tmp_path / "b", limit_ids=5, max_per_id=2, seed=3)
    ta, tb = (pq.read_table(tmp_path / d / "images.parquet") for d in "ab")
    assert a.identities == 5 and a.images <= 10 and ta.equals(tb)
    c = build_index(synth_root, tmp_path / "c", limit_ids=5, max_per_id=2, seed=4)
    assert set(pq.read_table(tmp_path / "c" / "images.parquet").column("image_id").to_pylist()) != set(
        ta.column("image_id").to_pylist()) or c.images != a.images


def test_list_selects_exactly(synth_root, tmp_path):
    wanted = [line.split(";")[0] for line in _info_lines(synth_root)[1:]][::3]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(wanted + ["99999/999999"]) + "\n")
    summary = build_index(synth_root, tmp_path / "b", list_file=listing)
    got = BuildDir.open(tmp_path / "b").images(["vehicle_id", "image_id"]).to_pylist()
    assert sorted(f"{r['vehicle_id']}/{r['image_id']}" for r in got) == sorted(wanted)
    assert summary.rejected == {"not in vehicle_info.txt": 1}


def test_missing_root_and_empty_result_are_errors(tmp_path):
    with pytest.raises(T2IError, match="does not exist"):
        build_index(tmp_path / "nope", tmp_path / "b")
    (tmp_path / "empty" / "train_test_split").mkdir(parents=True)
    (tmp_path / "empty" / "train_test_split" / "vehicle_info.txt").write_text("id;a;b;c;d;e\n00001/000001;1;t;m;s;red\n")
    with pytest.raises(T2IError, match="no usable images"):
        build_index(tmp_path / "empty", tmp_path / "b")


def test_resume_reuses_logged_results_and_ignores_a_torn_line(synth_root, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    first = _info_lines(synth_root)[1].split(";")[0]
    vid, img = first.split("/")
    logged = {"path": f"images/{vid}/{img}.jpg", "ok": True, "width": 999, "height": 7, "sha256": "0" * 64}
    (out / PROGRESS).write_text(json.dumps(logged) + "\n" + '{"path": "images/x/y.jpg", "ok": tr')
    build_index(synth_root, out)
    rows = {r["image_id"]: r for r in BuildDir.open(out).images().to_pylist()}
    assert rows[img]["width"] == 999  # taken from the log, not decoded again
    assert len(rows) == len(_info_lines(synth_root)) - 1


def test_killed_index_resumes_to_the_same_result(tmp_path):
    src = tmp_path / "src"
    write_sample(src, ids=100, per_id=(8, 8), seed=1)  # 800 images: progress is logged every 256
    build_index(src, tmp_path / "clean")
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "t2iverw.cli", "index", str(src), "--out", str(killed), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _lines(killed / PROGRESS) == 0 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    logged = _lines(killed / PROGRESS)
    assert 0 < logged < 800 and not (killed / "images.parquet").exists(), "the kill must land mid-work"

    build_index(src, killed)
    clean, resumed = (pq.read_table(tmp_path / d / "images.parquet") for d in ("clean", "killed"))
    assert resumed.equals(clean) and resumed.num_rows == 800


def _lines(path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


# --- metadata encoding ------------------------------------------------------------------
def test_undecodable_metadata_line_is_rejected_or_read_with_its_encoding(source, tmp_path):
    info = source / "train_test_split" / "vehicle_info.txt"
    lines = info.read_bytes().splitlines()
    vid, img = lines[3].decode().split(";")[0].split("/")
    fields = lines[3].decode().split(";")
    fields[3] = "大众-朗逸"  # a model name in Chinese, written in GBK (not UTF-8)
    lines[3] = ";".join(fields).encode("gbk")
    info.write_bytes(b"\n".join(lines) + b"\n")

    summary = build_index(source, tmp_path / "strict")
    rejected = [json.loads(x) for x in (tmp_path / "strict" / "rejected.jsonl").read_text().splitlines()]
    assert summary.rejected == {"undecodable metadata line": 1}
    assert rejected[0]["line"] == 4 and "line 4" in rejected[0]["reason"] and "--encoding" in rejected[0]["reason"]
    ids = BuildDir.open(tmp_path / "strict").images(["image_id"]).column("image_id").to_pylist()
    assert img not in ids and len(ids) == len(lines) - 2  # nothing else lost, nothing mangled

    build_index(source, tmp_path / "gbk", encoding="gbk")
    rows = {r["image_id"]: r for r in BuildDir.open(tmp_path / "gbk").images().to_pylist()}
    assert rows[img]["model"] == "大众-朗逸" and len(rows) == len(lines) - 1
    assert json.loads((tmp_path / "gbk" / "build.json").read_text())["encoding"] == "gbk"
    with pytest.raises(T2IError, match="unknown --encoding"):
        build_index(source, tmp_path / "x", encoding="no-such-codec")


# --- VeRi-776 ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def veri_root(tmp_path_factory):
    from t2iverw.synth import write_veri776_sample

    root = tmp_path_factory.mktemp("veri776")
    summary = write_veri776_sample(root, ids=9, per_id=(2, 4), seed=0)
    return root, summary.labels


def test_veri776_is_detected_and_read_with_names_and_the_erratum_fixed(veri_root, tmp_path):
    root, labels = veri_root
    summary = build_index(root, tmp_path / "b")  # detected by its layout
    rows = {r["image_id"]: r for r in BuildDir.open(tmp_path / "b").images().to_pylist()}
    assert summary.source == "veri776" and len(rows) == len(labels)  # query images are test images: indexed once
    for label in labels:
        row = rows[label["image"][: -len(".jpg")]]
        assert (row["vehicle_id"], row["camera_id"], row["color"], row["type"]) == (
            label["vehicle_id"], label["camera_id"], label["color"], label["type"])
        assert row["path"] == f"image_{label['subset']}/{label['image']}" and row["time"] is None and row["model"] is None
    erratum = [x["image"] for x in labels if x["type_id"] == "0"]
    assert erratum and {rows[x[:-4]]["type"] for x in erratum} == {"suv"}
    info = json.loads((tmp_path / "b" / "build.json").read_text())
    assert info["source_format"] == "veri776"
    assert sorted(c["image"] for c in info["corrections"]) == sorted(erratum)
    assert any("typeID=0 erratum" in line and "0003" in line for line in summary.lines())


def test_veri776_cli_source_option(veri_root, tmp_path):
    from click.testing import CliRunner

    from t2iverw.cli import cli

    root, labels = veri_root
    result = CliRunner().invoke(cli, ["index", str(root), "--out", str(tmp_path / "b"), "--source", "veri776"])
    assert result.exit_code == 0, result.output
    assert f"indexed {len(labels)} images of 9 identities (veri776)" in result.output
    result = CliRunner().invoke(cli, ["index", str(root), "--out", str(tmp_path / "c"), "--source", "veri-wild"])
    assert result.exit_code == 2 and "vehicle_info.txt not found" in result.output


def _jpeg(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path, format="JPEG")


def test_veri776_bad_labels_are_rejected_with_reasons(tmp_path):
    # written by hand from the dataset's documentation, independently of t2iverw.synth and t2iverw.veri776
    root = tmp_path / "VeRi"
    names = ["0003_c001_00000010_0.jpg", "0005_c002_00000020_0.jpg", "0006_c003_00000030_0.jpg",
             "0008_c004_00000040_0.jpg", "0009_c005_00000050_0.jpg", "0010_c006_00000060_0.jpg"]
    for name in names[:-1]:
        _jpeg(root / "image_train" / name)
    (root / "name_train.txt").write_text("\n".join(names) + "\n")
    items = [
        '<Item imageName="0003_c001_00000010_0.jpg" vehicleID="0003" cameraID="c001" colorID="10" typeID="0"/>',
        '<Item imageName="0005_c002_00000020_0.jpg" vehicleID="0005" cameraID="c002" colorID="1" typeID="0"/>',
        '<Item imageName="0006_c003_00000030_0.jpg" vehicleID="0006" cameraID="c003" colorID="11" typeID="1"/>',
        '<Item imageName="0010_c006_00000060_0.jpg" vehicleID="0010" cameraID="c006" colorID="2" typeID="9"/>',
        '<Item imageName="0009_c005_00000050_0.jpg" vehicleID="0009" cameraID="c005" colorID="8" typeID="9"/>',
    ]  # 0008 has no label; 0010 is labelled but its file is missing
    xml = '<?xml version="1.0" encoding="gb2312"?>\n<TrainingImages Version="1.0" 说明="车辆">\n<Items>\n' + \
        "\n".join(items) + "\n</Items>\n</TrainingImages>\n"
    (root / "train_label.xml").write_bytes(xml.encode("gb2312"))
    (root / "list_color.txt").write_text(
        "1 yellow\n2 orange\n3 green\n4 gray\n5 red\n6 blue\n7 white\n8 golden\n9 brown\n10 black\n")
    (root / "list_type.txt").write_text("1 sedan\n2 suv\n3 van\n4 hatchback\n5 mpv\n6 pickup\n7 bus\n8 truck\n9 estate\n")
    import xml.etree.ElementTree as ET

    with pytest.raises(ValueError, match="multi-byte encodings"):  # why the reader decodes first
        ET.fromstring((root / "train_label.xml").read_bytes())

    summary = build_index(root, tmp_path / "b")
    rows = {r["image_id"]: r for r in BuildDir.open(tmp_path / "b").images().to_pylist()}
    assert set(rows) == {"0003_c001_00000010_0", "0009_c005_00000050_0"}
    assert (rows["0003_c001_00000010_0"]["type"], rows["0003_c001_00000010_0"]["color"]) == ("suv", "black")
    assert (rows["0009_c005_00000050_0"]["type"], rows["0009_c005_00000050_0"]["color"]) == ("estate", "golden")
    reasons = {json.loads(x)["image"]: json.loads(x)["reason"]
               for x in (tmp_path / "b" / "rejected.jsonl").read_text().splitlines()}
    assert "unknown typeID '0'" in reasons["0005_c002_00000020_0.jpg"]  # typeID 0 outside the erratum
    assert "unknown colorID '11'" in reasons["0006_c003_00000030_0.jpg"]
    assert "no label" in reasons["0008_c004_00000040_0.jpg"]
    assert "missing file image_train/0010_c006_00000060_0.jpg" in reasons.values()
    assert summary.rejected == {"unknown typeID": 1, "unknown colorID": 1, "no label": 1, "missing file": 1}


# --- columnar reading: duplicates, order ------------------------------------------------
def test_duplicate_ids_keep_their_first_line_and_rows_come_out_in_id_order(source, tmp_path):
    info = source / "train_test_split" / "vehicle_info.txt"
    header, *lines = _info_lines(source)
    shuffled = lines[::-1]  # rows must still come out sorted by (vehicle_id, image_id)
    first_id = shuffled[0].split(";")[0]
    again = first_id + ";999;2000-01-01 00:00:00;other;other;other"  # same image id, other metadata
    info.write_text("\n".join([header, *shuffled[:3], again, *shuffled[3:], again]) + "\n")

    summary = build_index(source, tmp_path / "b")
    rejected = [json.loads(x) for x in (tmp_path / "b" / "rejected.jsonl").read_text().splitlines()]
    assert summary.rejected == {"duplicate image id": 2}
    assert [r["line"] for r in rejected] == [5, len(lines) + 3]  # header is line 1
    assert all(r["text"] == again and r["reason"] == f"duplicate image id {first_id.split('/')[1]}" for r in rejected)
    rows = BuildDir.open(tmp_path / "b").images().to_pylist()
    keys = [(r["vehicle_id"], r["image_id"]) for r in rows]
    assert keys == sorted(tuple(line.split(";")[0].split("/")) for line in lines)
    kept = next(r for r in rows if f"{r['vehicle_id']}/{r['image_id']}" == first_id)
    assert kept["camera_id"] == shuffled[0].split(";")[1]  # the first line's metadata, not the duplicate's
