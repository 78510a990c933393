"""The export schema, defined once as `datasets.Features`.

Parquet writing, the dataset card and annotations/schema.md all derive from
`features()`, so the published schema cannot drift from what is written. Columns
whose stage has not run are present and null with the same types: the schema never
changes shape between a bare and a fully annotated build. Only export options change
it: `--no-images` drops `image`, `--augmented-copies` adds the three `image_*` copies.
"""

from __future__ import annotations

from datasets import Features, Image, List, Value

from t2iverw.constants import AUGMENTED, GRID, PARTS, query_id  # noqa: F401 (query_id: the schema's id rule)

RLE = {"size": List(Value("int32"), length=2), "counts": Value("string")}
CAPTION_SOURCES = ("model", "human-edited", "human-accepted", "release")

# column -> one-line description; the order here is the column order of the export.
DESCRIPTIONS: dict[str, str] = {
    "image": "The vehicle crop, original JPEG bytes embedded (absent in an annotations-only export).",
    "image_id": "Image id of letters, digits, '_' and '-' (VERI-Wild and the release: the file stem; a person-search set: the path below imgs/, folders joined by `__`).",
    "vehicle_id": "Vehicle identity; retrieval ground truth.",
    "camera_id": "Camera id from the source metadata.",
    "time": "Capture time from the source metadata.",
    "model": "Vehicle model name from the source metadata.",
    "type": "Vehicle body type from the source metadata.",
    "color": "Body colour from the source metadata.",
    "path": "Path of the image relative to the source root (VERI-Wild: `images/<vehicle_id>/<image_id>.jpg`).",
    "width": "Image width in pixels.",
    "height": "Image height in pixels.",
    "sha256": "SHA-256 of the image file, to check re-attached images.",
    "caption_id": "Query id of the first caption; equals image_id. Caption k > 0 of `captions` is query `<caption_id>#<k>`.",
    "caption": "Witness-style description of the vehicle: the first of `captions` (null until `t2iverw caption`).",
    "captions": "Every caption of the image, each one a query (one in T2I-VeRW; null until `t2iverw caption`).",
    "caption_source": f"Who wrote the caption: {', '.join(CAPTION_SOURCES)} (null without a caption).",
    "caption_flags": "Review flags of the caption from `t2iverw caption-qa` rules (empty when clean; null without a caption).",
    "part_masks": f"COCO RLE masks of the six parts in order {', '.join(PARTS)} (null until `t2iverw segment`; null for an imported release, which has only grids).",
    "part_scores": "Best detection score of each part (null until `t2iverw segment`).",
    "part_grid": "Each part's mask on the ViT patch grid, parts x grid_h x grid_w (null until `t2iverw segment`).",
    "mim_seed": "The release's `mask` grid: patch cells the released MIM masks first (null unless imported with `import-release`).",
    "prompt": "The release's `prompt` field (null unless imported with `import-release`).",
    "image_dark": "Under-exposed copy of the crop (only with `export --augmented-copies`).",
    "image_light": "Over-exposed copy of the crop (only with `export --augmented-copies`).",
    "image_noisy": "Gaussian-noise copy of the crop (only with `export --augmented-copies`).",
}


def features(grid: tuple[int, int] = GRID, with_images: bool = True, augmented: bool = False) -> Features:
    """The export Features for a patch grid of `grid` cells."""
    n = len(PARTS)
    bool_grid = List(List(Value("bool"), length=grid[1]), length=grid[0])
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
        "captions": List(Value("string")),
        "caption_source": Value("string"),
        "caption_flags": List(Value("string")),
        "part_masks": List(RLE, length=n),
        "part_scores": List(Value("float32"), length=n),
        "part_grid": List(bool_grid, length=n),
        "mim_seed": bool_grid,
        "prompt": Value("string"),
        **{f"image_{name}": Image() for name in AUGMENTED},
    }
    assert list(cols) == list(DESCRIPTIONS), "DESCRIPTIONS and features() must list the same columns"
    if not with_images:
        del cols["image"]
    if not (augmented and with_images):
        for name in AUGMENTED:
            del cols[f"image_{name}"]
    return Features(cols)


def type_string(feature: object) -> str:
    """A short human-readable type, used by the schema doc and the card."""
    if isinstance(feature, Image):
        return "Image"
    return repr(feature).replace("Value('", "").replace("')", "")
