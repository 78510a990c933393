"""Reading a VeRi-776 root (the source of T2I-VeRI) into index entries.

Layout: `image_train/`, `image_test/`, `image_query/` with the lists `name_train.txt`,
`name_test.txt`, `name_query.txt`; labels in `train_label.xml` and `test_label.xml` as
`<Item imageName=... vehicleID=... cameraID=... colorID=... typeID=.../>`; colour and
type names in `list_color.txt` / `list_type.txt` (`<id> <name>` per line). The label
files declare the gb2312 encoding, which expat (ElementTree's parser) cannot read, so
their bytes are decoded with the declared codec first. Query images are the test
images seen again (same names); each image is indexed once. VeRi-776 has no capture
time and no model name: those columns stay null.

Known erratum: older copies label vehicles 0003, 0007 and 0041 with typeID="0"; all three
are SUVs, so their type is set to the SUV id and each corrected image is reported.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from t2iverw.constants import ID_RULE, is_id
from t2iverw.errors import T2IError

SUBSETS = ("train", "test", "query")  # image_<subset>/, name_<subset>.txt
LABEL_FILES = ("train_label.xml", "test_label.xml")
ERRATUM_VEHICLES = ("0003", "0007", "0041")
ERRATUM_TYPE_NAME = "suv"
DECLARATION = re.compile(rb"^\s*<\?xml[^>]*\?>")
DECLARED_ENCODING = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9_.-]+)["']""")


@dataclass
class VeRiRead:
    """Index entries (the columns of images.parquet before decoding), rejected inputs, corrections made."""

    entries: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    corrections: list[dict] = field(default_factory=list)


def is_veri776(root: Path) -> bool:
    """VeRi-776 is recognised by its training folder and its training labels."""
    return (root / "image_train").is_dir() and (root / LABEL_FILES[0]).is_file()


def read_veri776(root: str | Path) -> VeRiRead:
    """Entries for every listed image that has a label, with colour and type names resolved."""
    root = Path(root)
    if not is_veri776(root):
        raise T2IError(f"{root} is not a VeRi-776 root: expected image_train/ and {LABEL_FILES[0]}")
    colors = read_id_names(root / "list_color.txt")
    types = read_id_names(root / "list_type.txt")
    suv = next((i for i, name in types.items() if name.lower() == ERRATUM_TYPE_NAME), None)
    labels = {}
    for name in LABEL_FILES:
        if (root / name).exists():
            labels.update(read_labels(root / name))
    out = VeRiRead()
    seen: set[str] = set()
    for subset in SUBSETS:
        for image in _listed(root, subset):
            stem = image[: -len(".jpg")] if image.endswith(".jpg") else image
            if stem in seen:  # a query image is a test image again
                continue
            seen.add(stem)
            label = labels.get(f"{stem}.jpg")
            if label is None:
                out.rejected.append({"image": image, "reason": f"no label for {image} in {' or '.join(LABEL_FILES)}"})
                continue
            entry = _entry(subset, stem, label, colors, types, suv, out)
            if entry is not None:
                out.entries.append(entry)
    return out


def read_id_names(path: Path) -> dict[str, str]:
    """`<id> <name>` lines (VeRi's list_color.txt / list_type.txt) as {id: name}."""
    if not path.exists():
        raise T2IError(f"{path} not found: VeRi-776 names its colours and types there")
    names = {}
    for lineno, line in enumerate(_decode(path.read_bytes(), path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise T2IError(f"{path}: line {lineno} is not '<id> <name>': {line[:80]!r}")
        names[parts[0]] = parts[1].strip()
    return names


def read_labels(path: Path) -> dict[str, dict]:
    """imageName -> the attributes of its <Item>, from a label XML in its declared encoding."""
    data = path.read_bytes()
    text = _decode(DECLARATION.sub(b"", data, count=1), path, _declared_encoding(data))
    try:
        tree = ET.fromstring(text)
    except ET.ParseError as exc:
        raise T2IError(f"{path} is not valid XML: {exc}") from None
    labels = {}
    for item in tree.iter("Item"):
        name = item.get("imageName")
        if name:
            labels[name] = dict(item.attrib)
    if not labels:
        raise T2IError(f"{path} holds no <Item imageName=...> labels")
    return labels


def _declared_encoding(data: bytes) -> str:
    match = DECLARATION.match(data)
    found = DECLARED_ENCODING.search(match.group(0)) if match else None
    return found.group(1).decode("ascii") if found else "utf-8"


def _decode(data: bytes, path: Path, encoding: str = "utf-8") -> str:
    try:
        return data.decode(encoding)
    except LookupError:
        raise T2IError(f"{path} declares the unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as exc:
        raise T2IError(f"{path} is not valid {encoding} (byte {exc.start})") from None


def _listed(root: Path, subset: str) -> list[str]:
    """Image names of one subset: its name list when present, else the files of its folder."""
    listing, folder = root / f"name_{subset}.txt", root / f"image_{subset}"
    if listing.exists():
        return [line.strip() for line in _decode(listing.read_bytes(), listing).splitlines() if line.strip()]
    return sorted(p.name for p in folder.glob("*.jpg")) if folder.is_dir() else []


def _entry(subset: str, stem: str, label: dict, colors: dict, types: dict, suv: str | None,
           out: VeRiRead) -> dict | None:
    image = f"{stem}.jpg"
    vehicle, type_id, color_id = label.get("vehicleID"), label.get("typeID"), label.get("colorID")
    if not vehicle:
        out.rejected.append({"image": image, "reason": f"label of {image} has no vehicleID"})
        return None
    if not (is_id(stem) and is_id(vehicle)):  # ids name files and sit in pages, as `index` rules for VERI-Wild
        out.rejected.append({"image": image, "reason": f"malformed id: image {stem[:80]!r} of vehicle "
                                                    f"{vehicle[:80]!r} is not of {ID_RULE}"})
        return None
    if type_id == "0" and vehicle in ERRATUM_VEHICLES and suv is not None:
        out.corrections.append({"image": image, "vehicle_id": vehicle, "field": "typeID", "from": "0", "to": suv,
                                "reason": "known VeRi-776 erratum: vehicles 0003, 0007, 0041 are SUVs"})
        type_id = suv
    if type_id not in types:
        out.rejected.append({"image": image, "reason": f"unknown typeID {type_id!r} for {image} (not in list_type.txt)"})
        return None
    if color_id not in colors:
        out.rejected.append({"image": image, "reason": f"unknown colorID {color_id!r} for {image} (not in list_color.txt)"})
        return None
    return {"image_id": stem, "vehicle_id": vehicle, "camera_id": label.get("cameraID"), "time": None, "model": None,
            "type": types[type_id], "color": colors[color_id], "path": f"image_{subset}/{image}"}
