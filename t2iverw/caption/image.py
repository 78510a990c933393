"""Loading a crop for captioning: decoded, RGB, downscaled to a pixel budget, JPEG-encoded.

The budget bounds the vision tokens per request (Qwen3-VL spends one token per 32x32
pixels), which is where a vLLM server's throughput goes; VERI-Wild crops are mostly
below it already and are then sent at their own size.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

from PIL import Image

DEFAULT_MAX_PIXELS = 512 * 512
JPEG_QUALITY = 90


class BadImage(Exception):
    """The file is missing or cannot be decoded: a per-image failure, never a reason to stop the run."""


def load_crop(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            image = im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImage(f"{type(exc).__name__}: {exc}") from None
    scale = math.sqrt(max_pixels / (image.width * image.height))
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


def jpeg_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
