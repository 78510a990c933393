"""The export schema, defined once as `datasets.Features`.

Parquet writing, the dataset card and annotations/schema.md all derive from
`features()`, so the published schema cannot drift from what is written. Columns
whose stage has not run are present and null with the same types: the schema never
changes shape between a bare and a fully annotated build.
"""

from __future__ import annotations

from datasets import Features, Image, List, Value

from t2iverw.constants import GRID, PARTS

RLE = {"size": List(Value("int32"), length=2), "counts": Value("string")}

# column -> one-line description; the order here is the column order of the export.
DESCRIPTIONS: dict[str, str] = {
    "image": "The vehicle crop, original JPEG bytes embedded (absent in an annotations-only export).",
    "image_id": "VERI-Wild image id (file stem).",
    "vehicle_id": "VERI-Wild vehicle identity; retrieval ground truth.",
    "camera_id": "Camera id from vehicle_info.txt.",
    "time": "Capture time from vehicle_info.txt.",
    "model": "Vehicle model name from vehicle_info.txt.",
    "type": "Vehicle body type from vehicle_info.txt.",
    "color": "Body colour from vehicle_info.txt.",
    "path": "Path of the image relative to the VERI-Wild root (`images/<vehicle_id>/<image_id>.jpg`).",
    "width": "Image width in pixels.",
    "height": "Image height in pixels.",
    "sha256": "SHA-256 of the image file, to check re-attached images.",
    "caption_id": "Query id in evaluation; equals image_id (one caption per image).",
    "caption": "Witness-style description of the vehicle (null until `t2iverw caption`).",
    "part_masks": f"COCO RLE masks of the six parts in order {', '.join(PARTS)} (null until `t2iverw segment`).",
    "part_scores": "Best detection score of each part (null until `t2iverw segment`).",
    "part_grid": "Each part's mask on the ViT patch grid, parts x grid_h x grid_w (null until `t2iverw segment`).",
}


def features(grid: tuple[int, int] = GRID, with_images: bool = True) -> Features:
    """The export Features for a patch grid of `grid` cells."""
    n = len(PARTS)
    cols = {
        "image": Image(),
        "image_id": Value("string"),
        "vehicle_id": Value("string"),
        "camera_id": Value("string"),
        "time": Value("string"),
        "model": Value("string"),
        "type": Value("string"),
        "color": Value("string"),
        "path": Value("string"),
        "width": Value("int32"),
        "height": Value("int32"),
        "sha256": Value("string"),
        "caption_id": Value("string"),
        "caption": Value("string"),
        "part_masks": List(RLE, length=n),
        "part_scores": List(Value("float32"), length=n),
        "part_grid": List(List(List(Value("bool"), length=grid[1]), length=grid[0]), length=n),
    }
    assert list(cols) == list(DESCRIPTIONS), "DESCRIPTIONS and features() must list the same columns"
    if not with_images:
        del cols["image"]
    return Features(cols)


def type_string(feature: object) -> str:
    """A short human-readable type, used by the schema doc and the card."""
    if isinstance(feature, Image):
        return "Image"
    return repr(feature).replace("Value('", "").replace("')", "")
