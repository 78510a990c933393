"""`t2iverw synth`: a small VERI-Wild- or VeRi-776-shaped sample of drawn vehicles, with exact part masks.

VERI-Wild cannot be redistributed, so tests and the demo run on this. Each identity is
one drawn vehicle (fixed colour, body type, model, wheel design, roof features) seen
from the side, front or rear at varying scale, offset, background and lighting. Every
part is drawn into its own mask layer as it is painted, so the ground truth is exact.

Layout written (the real VERI-Wild layout, plus one side directory):
    images/<vehicle_id>/<image_id>.jpg
    train_test_split/vehicle_info.txt     header, then vid/imgid;camera;time;model;type;color
    train_test_split/train_list.txt       vid/imgid per line
    part_masks/<vehicle_id>/<image_id>.png  uint8, bit i set where PARTS[i] covers the pixel

`--layout veri776` writes VeRi-776's layout instead (see `write_veri776_sample`): the
image folders and name lists, gb2312 label XML, and the colour and type lists. It is
written here from the dataset's documentation, sharing no code with the reader
(t2iverw/veri776.py), so that tests of the reader have an independent writer.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance
from tqdm import tqdm

from t2iverw.constants import PARTS
from t2iverw.storage import atomic_path, write_text

COLORS: dict[str, tuple[int, int, int]] = {
    "white": (236, 236, 232),
    "black": (28, 28, 30),
    "silver": (176, 180, 186),
    "gray": (110, 112, 116),
    "red": (186, 30, 36),
    "blue": (32, 70, 160),
    "yellow": (228, 196, 40),
    "green": (40, 120, 60),
    "brown": (116, 76, 44),
    "orange": (230, 120, 30),
    "golden": (200, 160, 60),
}
VERI_WILD_COLORS = ("white", "black", "silver", "gray", "red", "blue", "yellow", "green", "brown")
TYPES = ("sedan", "SUV", "hatchback", "MPV", "pickup truck")
BRANDS = ("Aurex", "Belvane", "Corsa", "Dunmore", "Elara", "Fenwick", "Galt", "Harlan")
MODELS = ("Primo", "Vista", "Strada", "Nova", "Terra", "Lumen", "Axis", "Orbit")
VIEWS = ("side", "front", "rear")
HEADER = "id;Camera ID;Time;Model;Type;Color"


@dataclass(frozen=True)
class Vehicle:
    """The fixed look of one identity."""

    vehicle_id: str
    color: str
    type: str
    model: str
    spokes: int
    roof_rails: bool
    sunroof: bool
    sticker: bool


@dataclass
class SynthSummary:
    root: Path
    identities: int
    images: int
    labels: list[dict] = field(default_factory=list)  # VeRi-776 layout: what each written label says


class Canvas:
    """An RGB image plus one mask layer per part; drawing a part paints both."""

    def __init__(self, size: tuple[int, int], background: tuple[int, int, int]):
        self.image = Image.new("RGB", size, background)
        self.draw = ImageDraw.Draw(self.image)
        self.masks = {p: Image.new("L", size, 0) for p in PARTS}

    def shape(self, kind: str, xy, fill, part: str | None = None, **kw) -> None:
        """Paint a shape; it hides whatever it covers (painter's rule), so masks show visible parts only."""
        getattr(self.draw, kind)(xy, fill=fill, **kw)
        for name, mask in self.masks.items():
            getattr(ImageDraw.Draw(mask), kind)(xy, fill=255 if name == part else 0, **kw)

    def bitmask(self) -> np.ndarray:
        out = np.zeros(self.image.size[::-1], dtype=np.uint8)
        for i, p in enumerate(PARTS):
            out |= (np.asarray(self.masks[p]) > 127).astype(np.uint8) << i
        return out


def _shade(rgb: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(max(0, min(255, int(c * f))) for c in rgb)


def _wheel(c: Canvas, cx: float, cy: float, r: float, spokes: int) -> None:
    c.shape("ellipse", (cx - r, cy - r, cx + r, cy + r), (20, 20, 20), part="wheels")
    rr = r * 0.6
    c.shape("ellipse", (cx - rr, cy - rr, cx + rr, cy + rr), (165, 168, 172), part="wheels")
    for k in range(spokes):
        a = 2 * np.pi * k / spokes
        c.shape("line", (cx, cy, cx + rr * np.cos(a), cy + rr * np.sin(a)), (70, 70, 74), part="wheels",
                width=max(1, int(r / 8)))


def _draw_side(c: Canvas, v: Vehicle, box: tuple[float, float, float, float], facing_right: bool) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    body = COLORS[v.color]
    tall = v.type in ("SUV", "MPV")
    cab_top = y0 + h * (0.02 if tall else 0.12)
    belt = y0 + h * 0.45
    sill = y0 + h * 0.80
    # Cabin extent along the body (as fractions from the rear), by body type.
    cab_r, cab_f = {"sedan": (0.22, 0.68), "SUV": (0.06, 0.74), "hatchback": (0.06, 0.66),
                    "MPV": (0.04, 0.76), "pickup truck": (0.40, 0.74)}[v.type]
    fx = (lambda t: x0 + w * t) if facing_right else (lambda t: x1 - w * t)
    # lower body and cabin
    c.shape("rounded_rectangle", (x0, belt, x1, sill + h * 0.05), body, radius=h * 0.08)
    cab = [(fx(cab_r), belt), (fx(cab_r + 0.04), cab_top), (fx(cab_f - 0.08), cab_top), (fx(cab_f), belt)]
    c.shape("polygon", cab, body)
    # roof strip (+ rails, sunroof)
    roof_h = h * 0.05
    c.shape("polygon", [(fx(cab_r + 0.04), cab_top), (fx(cab_f - 0.08), cab_top),
                        (fx(cab_f - 0.085), cab_top + roof_h), (fx(cab_r + 0.045), cab_top + roof_h)],
            _shade(body, 0.85), part="roof")
    if v.roof_rails:
        c.shape("rectangle", sorted_box(fx(cab_r + 0.06), cab_top - h * 0.035, fx(cab_f - 0.10), cab_top),
                (60, 60, 64), part="roof")
    # side windows, split by a pillar into front and rear
    glass = (52, 64, 84)
    wt, wb = cab_top + roof_h + h * 0.02, belt - h * 0.02
    mid = (cab_r + cab_f) / 2
    for a, b in ((cab_r + 0.05, mid - 0.01), (mid + 0.01, cab_f - 0.05)):
        c.shape("polygon", [(fx(a), wb), (fx(a + 0.02), wt), (fx(b - 0.02), wt), (fx(b), wb)], glass, part="windows")
    # doors below the windows, outlined by seams
    for a, b in ((cab_r + 0.04, mid), (mid, cab_f)):
        c.shape("rectangle", sorted_box(fx(a), belt + h * 0.01, fx(b), sill - h * 0.02), _shade(body, 0.95), part="doors")
        c.draw.rectangle(sorted_box(fx(a), belt + h * 0.01, fx(b), sill - h * 0.02), outline=_shade(body, 0.6), width=1)
    # mirror at the front of the cabin, lights at both ends
    c.shape("ellipse", sorted_box(fx(cab_f - 0.03), belt - h * 0.08, fx(cab_f + 0.03), belt - h * 0.01),
            _shade(body, 0.7), part="mirrors")
    c.shape("rectangle", sorted_box(fx(0.93), belt + h * 0.04, fx(0.995), belt + h * 0.13), (250, 240, 200), part="lights")
    c.shape("rectangle", sorted_box(fx(0.005), belt + h * 0.04, fx(0.05), belt + h * 0.14), (200, 30, 30), part="lights")
    if v.sticker:
        c.shape("rectangle", sorted_box(fx(0.10), belt + h * 0.18, fx(0.18), belt + h * 0.24), (240, 240, 240))
    r = h * 0.17
    for t in (0.2, 0.8):
        _wheel(c, fx(t), sill, r, v.spokes)


def _draw_end(c: Canvas, v: Vehicle, box: tuple[float, float, float, float], front: bool) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    body = COLORS[v.color]
    tall = v.type in ("SUV", "MPV")
    cab_top = y0 + h * (0.02 if tall else 0.10)
    belt = y0 + h * 0.48
    bottom = y0 + h * 0.90
    # tyres first so the body covers their tops
    for cx in (x0 + w * 0.16, x1 - w * 0.16):
        c.shape("rounded_rectangle", (cx - w * 0.08, bottom - h * 0.12, cx + w * 0.08, y1), (20, 20, 20),
                part="wheels", radius=w * 0.02)
    c.shape("rounded_rectangle", (x0, belt, x1, bottom), body, radius=h * 0.06)
    c.shape("polygon", [(x0 + w * 0.06, belt), (x0 + w * 0.16, cab_top), (x1 - w * 0.16, cab_top), (x1 - w * 0.06, belt)], body)
    roof_h = h * 0.05
    c.shape("rectangle", (x0 + w * 0.17, cab_top, x1 - w * 0.17, cab_top + roof_h), _shade(body, 0.85), part="roof")
    if v.sunroof and front:
        c.shape("rectangle", (x0 + w * 0.35, cab_top + h * 0.01, x1 - w * 0.35, cab_top + roof_h - h * 0.01),
                (40, 40, 48), part="roof")
    # windshield / rear window
    c.shape("polygon", [(x0 + w * 0.12, belt - h * 0.02), (x0 + w * 0.20, cab_top + roof_h + h * 0.02),
                        (x1 - w * 0.20, cab_top + roof_h + h * 0.02), (x1 - w * 0.12, belt - h * 0.02)],
            (52, 64, 84), part="windows")
    light = (250, 240, 200) if front else (200, 30, 30)
    ly = belt + h * 0.08
    for lx in (x0 + w * 0.05, x1 - w * 0.23):
        c.shape("ellipse", (lx, ly, lx + w * 0.18, ly + h * 0.10), light, part="lights")
    if front:
        c.shape("rectangle", (x0 + w * 0.30, ly, x1 - w * 0.30, ly + h * 0.16), (40, 40, 44))  # grille
        for mx in (x0 - w * 0.06, x1 - w * 0.01):
            c.shape("ellipse", (mx, belt - h * 0.10, mx + w * 0.07, belt - h * 0.01), _shade(body, 0.7), part="mirrors")
    else:
        c.shape("rectangle", (x0 + w * 0.36, ly + h * 0.05, x1 - w * 0.36, ly + h * 0.12), (230, 230, 225))  # plate
    if v.sticker and not front:
        c.shape("rectangle", (x0 + w * 0.62, belt - h * 0.12, x0 + w * 0.74, belt - h * 0.06), (240, 240, 240))


def sorted_box(xa: float, ya: float, xb: float, yb: float) -> tuple[float, float, float, float]:
    return (min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))


def render(v: Vehicle, rng: random.Random) -> tuple[Image.Image, np.ndarray, str]:
    """One photo of vehicle `v`: (RGB image, part bitmask, view)."""
    view = rng.choice(VIEWS)
    aspect = rng.uniform(1.6, 2.1) if view == "side" else rng.uniform(0.95, 1.25)
    height = rng.randint(120, 220)
    size = (int(height * aspect), height)
    bg = tuple(rng.randint(60, 200) for _ in range(3))
    c = Canvas(size, bg)
    c.draw.rectangle((0, int(size[1] * rng.uniform(0.55, 0.8)), size[0], size[1]), fill=_shade(bg, 0.7))  # road
    margin_x, margin_y = size[0] * rng.uniform(0.04, 0.12), size[1] * rng.uniform(0.04, 0.12)
    dx, dy = rng.uniform(-1, 1) * margin_x * 0.5, rng.uniform(-1, 1) * margin_y * 0.5
    box = (margin_x + dx, margin_y + dy, size[0] - margin_x + dx, size[1] - margin_y + dy)
    if view == "side":
        _draw_side(c, v, box, facing_right=rng.random() < 0.5)
    else:
        _draw_end(c, v, box, front=view == "front")
    image = ImageEnhance.Brightness(c.image).enhance(rng.uniform(0.6, 1.3))
    return image, c.bitmask(), view


def make_vehicle(index: int, seed: int) -> Vehicle:
    rng = random.Random(f"t2iverw-synth-{seed}-vehicle-{index}")
    return Vehicle(
        vehicle_id=f"{index + 1:05d}",
        color=rng.choice(VERI_WILD_COLORS),
        type=rng.choice(TYPES),
        model=f"{rng.choice(BRANDS)}-{rng.choice(MODELS)}",
        spokes=rng.randint(4, 7),
        roof_rails=rng.random() < 0.4,
        sunroof=rng.random() < 0.3,
        sticker=rng.random() < 0.3,
    )


def write_sample(out: str | Path, ids: int, per_id: tuple[int, int] = (3, 8), seed: int = 0) -> SynthSummary:
    """Write a synthetic VERI-Wild root with `ids` identities of per_id[0]..per_id[1] images each."""
    out = Path(out)
    lo, hi = per_id
    if ids < 1 or lo < 1 or hi < lo:
        raise ValueError(f"need ids >= 1 and 1 <= MIN <= MAX, got ids={ids}, per-id={lo}:{hi}")
    info_lines, list_lines = [HEADER], []
    image_counter = 0
    t0 = datetime(2018, 3, 1, 6, 0, 0)
    for index in tqdm(range(ids), desc="synth", unit="id"):
        v = make_vehicle(index, seed)
        rng = random.Random(f"t2iverw-synth-{seed}-images-{index}")
        for _ in range(rng.randint(lo, hi)):
            image_counter += 1
            image_id = f"{image_counter:06d}"
            image, bitmask, _ = render(v, rng)
            rel = f"{v.vehicle_id}/{image_id}"
            with atomic_path(out / "images" / f"{rel}.jpg") as tmp:
                image.save(tmp, format="JPEG", quality=90)
            with atomic_path(out / "part_masks" / f"{rel}.png") as tmp:
                Image.fromarray(bitmask).save(tmp, format="PNG")
            when = t0 + timedelta(seconds=rng.randint(0, 30 * 24 * 3600))
            camera = rng.randint(1, 174)
            info_lines.append(f"{rel};{camera};{when:%Y-%m-%d %H:%M:%S};{v.model};{v.type};{v.color}")
            list_lines.append(rel)
    write_text(out / "train_test_split" / "vehicle_info.txt", "\n".join(info_lines) + "\n")
    write_text(out / "train_test_split" / "train_list.txt", "\n".join(list_lines) + "\n")
    return SynthSummary(root=out, identities=ids, images=image_counter)


def read_truth(root: str | Path, rel_path_stem: str) -> np.ndarray:
    """Ground-truth masks of one image as bool (len(PARTS), H, W); `rel_path_stem` is 'vid/imgid'."""
    bitmask = np.asarray(Image.open(Path(root) / "part_masks" / f"{rel_path_stem}.png"))
    return np.stack([(bitmask >> i) & 1 for i in range(len(PARTS))]).astype(bool)


# --- VeRi-776 layout -------------------------------------------------------------
# Its list_color.txt and list_type.txt, in id order (ids start at 1).
VERI776_COLORS = ("yellow", "orange", "green", "gray", "red", "blue", "white", "golden", "brown", "black")
VERI776_TYPES = ("sedan", "suv", "van", "hatchback", "mpv", "pickup", "bus", "truck", "estate")
VERI776_DRAWN = {"sedan": "sedan", "suv": "SUV", "van": "MPV", "hatchback": "hatchback", "mpv": "MPV",
                 "pickup": "pickup truck", "bus": "MPV", "truck": "pickup truck", "estate": "hatchback"}
VERI776_ERRATUM = ("0003", "0007", "0041")  # SUVs that older copies label typeID="0"


def write_veri776_sample(out: str | Path, ids: int, per_id: tuple[int, int] = (3, 8), seed: int = 0,
                         erratum: bool = True) -> SynthSummary:
    """Write a synthetic VeRi-776 root; every third identity is a test identity, and the first
    image of each test identity is also a query. With `erratum`, vehicles 0003, 0007 and
    0041 (SUVs) are labelled typeID="0", as in older copies of VeRi-776."""
    out = Path(out)
    lo, hi = per_id
    if ids < 1 or lo < 1 or hi < lo:
        raise ValueError(f"need ids >= 1 and 1 <= MIN <= MAX, got ids={ids}, per-id={lo}:{hi}")
    names: dict[str, list[str]] = {"train": [], "test": [], "query": []}
    items: dict[str, list[str]] = {"train": [], "test": []}
    labels = []
    frame = 0
    for index in tqdm(range(ids), desc="synth", unit="id"):
        vid = f"{index + 1:04d}"
        rng = random.Random(f"t2iverw-synth-veri776-{seed}-vehicle-{index}")
        vtype = "suv" if vid in VERI776_ERRATUM else rng.choice(VERI776_TYPES)
        color = rng.choice(VERI776_COLORS)
        look = make_vehicle(index, seed)
        vehicle = Vehicle(vid, color, VERI776_DRAWN[vtype], look.model, look.spokes, look.roof_rails, look.sunroof,
                          look.sticker)
        subset = "test" if (index + 1) % 3 == 0 else "train"
        for k in range(rng.randint(lo, hi)):
            frame += rng.randint(1, 400)
            camera = f"c{rng.randint(1, 20):03d}"
            name = f"{vid}_{camera}_{frame:08d}_{k % 2}.jpg"
            image, bitmask, _ = render(vehicle, rng)
            with atomic_path(out / f"image_{subset}" / name) as tmp:
                image.save(tmp, format="JPEG", quality=90)
            with atomic_path(out / "part_masks" / vid / f"{name[:-4]}.png") as tmp:
                Image.fromarray(bitmask).save(tmp, format="PNG")
            names[subset].append(name)
            type_id = "0" if erratum and vid in VERI776_ERRATUM else str(VERI776_TYPES.index(vtype) + 1)
            items[subset].append(f'<Item imageName="{name}" vehicleID="{vid}" cameraID="{camera}" '
                                 f'colorID="{VERI776_COLORS.index(color) + 1}" typeID="{type_id}" />')
            labels.append({"image": name, "subset": subset, "vehicle_id": vid, "camera_id": camera,
                           "color": color, "type": vtype, "type_id": type_id})
            if subset == "test" and k == 0:  # a VeRi query is a test image seen again
                (out / "image_query").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(out / "image_test" / name, out / "image_query" / name)
                names["query"].append(name)
    for subset, listed in names.items():
        write_text(out / f"name_{subset}.txt", "".join(f"{n}\n" for n in listed))
    for subset, kind in (("train", "TrainingImages"), ("test", "TestImages")):
        xml = (f'<?xml version="1.0" encoding="gb2312"?>\n<!-- VeRi-776 车辆标注 (synthetic) -->\n'
               f'<{kind} Version="1.0">\n<Items number="{len(items[subset])}">\n'
               + "\n".join(items[subset]) + f"\n</Items>\n</{kind}>\n")
        with atomic_path(out / f"{subset}_label.xml") as tmp:
            tmp.write_bytes(xml.encode("gb2312"))
    write_text(out / "list_color.txt", "".join(f"{i} {c}\n" for i, c in enumerate(VERI776_COLORS, start=1)))
    write_text(out / "list_type.txt", "".join(f"{i} {t}\n" for i, t in enumerate(VERI776_TYPES, start=1)))
    return SynthSummary(root=out, identities=ids, images=len(labels), labels=labels)
