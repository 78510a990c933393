import numpy as np
from PIL import Image

from t2iverw.constants import PARTS
from t2iverw.synth import HEADER, read_truth, write_sample


def test_layout_and_metadata(synth_root):
    lines = (synth_root / "train_test_split" / "vehicle_info.txt").read_text().splitlines()
    assert lines[0] == HEADER
    rows = [line.split(";") for line in lines[1:]]
    assert all(len(r) == 6 for r in rows)
    for rel, *_ in rows:
        vid, imgid = rel.split("/")
        assert (synth_root / "images" / vid / f"{imgid}.jpg").exists()
        assert (synth_root / "part_masks" / vid / f"{imgid}.png").exists()
    listed = (synth_root / "train_test_split" / "train_list.txt").read_text().split()
    assert listed == [r[0] for r in rows]


def test_identity_is_fixed_across_its_images(synth_root):
    rows = [line.split(";") for line in (synth_root / "train_test_split" / "vehicle_info.txt").read_text().splitlines()[1:]]
    looks: dict[str, set] = {}
    for rel, _cam, _time, model, vtype, color in rows:
        looks.setdefault(rel.split("/")[0], set()).add((model, vtype, color))
    assert all(len(v) == 1 for v in looks.values())
    assert len({next(iter(v)) for v in looks.values()}) > 1  # identities differ


def test_truth_masks_match_image_and_are_plausible(synth_root):
    first = sorted((synth_root / "images").glob("*/*.jpg"))[:10]
    seen = np.zeros(len(PARTS), dtype=bool)
    for path in first:
        stem = f"{path.parent.name}/{path.stem}"
        truth = read_truth(synth_root, stem)
        w, h = Image.open(path).size
        assert truth.shape == (len(PARTS), h, w)
        assert truth[0].any() and truth[1].any()  # windows and lights are visible from every view
        seen |= truth.any(axis=(1, 2))
    assert seen.all(), "each part appears somewhere in the first images"


def test_deterministic_for_a_seed(tmp_path):
    a = write_sample(tmp_path / "a", ids=3, per_id=(2, 3), seed=7)
    b = write_sample(tmp_path / "b", ids=3, per_id=(2, 3), seed=7)
    c = write_sample(tmp_path / "c", ids=3, per_id=(2, 3), seed=8)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert a.images == b.images
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    info = "train_test_split/vehicle_info.txt"
    assert (tmp_path / "a" / info).read_text() != (tmp_path / "c" / info).read_text() or a.images != c.images


def test_veri776_layout(tmp_path):
    from t2iverw.synth import write_veri776_sample

    summary = write_veri776_sample(tmp_path, ids=7, per_id=(2, 3), seed=1)
    listed = {s: (tmp_path / f"name_{s}.txt").read_text().split() for s in ("train", "test", "query")}
    assert sorted(listed["train"] + listed["test"]) == sorted(x["image"] for x in summary.labels)
    assert set(listed["query"]) <= set(listed["test"]) and listed["query"]
    for subset, names in listed.items():
        assert all((tmp_path / f"image_{subset}" / n).is_file() for n in names)
    for name in ("train_label.xml", "test_label.xml"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b'<?xml version="1.0" encoding="gb2312"?>')
        text = data.decode("gb2312")
        assert "车辆" in text  # really gb2312 bytes, not ASCII
    erratum = [x for x in summary.labels if x["vehicle_id"] in ("0003", "0007")]
    assert erratum and all(x["type_id"] == "0" and x["type"] == "suv" for x in erratum)
    assert (tmp_path / "list_type.txt").read_text().splitlines()[1] == "2 suv"
    assert (tmp_path / "list_color.txt").read_text().splitlines()[7] == "8 golden"
