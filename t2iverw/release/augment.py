"""The dark, light and noisy copies of a crop that PFCVR's augmentation trains on.

The release ships them precomputed, but no script or values: these are ours, fixed in
t2iverw/constants.py and recorded with every export that makes them. Dark and light
are gamma curves (under- and over-exposure), noisy adds Gaussian noise seeded by the
image id, so the same build always gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter

import numpy as np
from PIL import Image

from t2iverw.constants import AUGMENT_GAMMA, AUGMENT_NOISE_STD, AUGMENTED

JPEG_QUALITY = 95


def settings() -> dict:
    """What made the copies, for manifests and cards."""
    return {"gamma": dict(AUGMENT_GAMMA), "noise_std": AUGMENT_NOISE_STD, "noise_seed": "sha256(image_id)",
            "jpeg_quality": JPEG_QUALITY}


def copies(image: Image.Image, image_id: str) -> dict[str, bytes]:
    """kind -> JPEG bytes of that copy, for every kind in AUGMENTED."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    seed = int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "little")
    noise = np.random.default_rng(seed).normal(0.0, AUGMENT_NOISE_STD / 255.0, pixels.shape).astype(np.float32)
    made = {kind: pixels ** AUGMENT_GAMMA[kind] for kind in AUGMENT_GAMMA}
    made["noisy"] = pixels + noise
    assert set(made) == set(AUGMENTED)
    return {kind: _jpeg(made[kind]) for kind in AUGMENTED}


def _jpeg(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray((np.clip(pixels, 0.0, 1.0) * 255.0).round().astype(np.uint8)).save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def copies_for(bd, row: dict, release_record: dict | None, made: Counter, original: bytes) -> dict[str, bytes]:
    """kind -> JPEG bytes of an image's three copies: the release's own files when the build has them,
    else made here from `original` (the image's bytes, already read and checked) with the values above;
    `made` counts which (`from_release`, `made`)."""
    paths = release_record.get("augmented") if release_record else None
    if paths:
        made["from_release"] += 1
        return {kind: bd.image_path(paths[kind]).read_bytes() for kind in AUGMENTED}
    made["made"] += 1
    with Image.open(io.BytesIO(original)) as image:
        return copies(image, row["image_id"])


def summary(made: Counter | None) -> dict | None:
    """What the manifest and the card say about the copies of an export (None without copies)."""
    if made is None:
        return None
    return {"from_release": made["from_release"], "made": made["made"], **(settings() if made["made"] else {})}
