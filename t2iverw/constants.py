"""Constants every stage agrees on: the part order, the patch grid, the file names and the query-id rule.

The part order is fixed by the paper (windows, lights, wheels, mirrors, roof, doors);
everything that stores one value per part stores it in this order.
"""

from __future__ import annotations

import re

PARTS: tuple[str, ...] = ("windows", "lights", "wheels", "mirrors", "roof", "doors")
PART_TEXT: tuple[str, ...] = tuple(f"Car {p}" for p in PARTS)

INPUT_SIZE = 384
PATCH_SIZE = 16
GRID: tuple[int, int] = (INPUT_SIZE // PATCH_SIZE, INPUT_SIZE // PATCH_SIZE)  # 24 x 24
# A caption longer than this is refused wherever one comes in (a release, a server's reply): real ones are
# 20-90 words, the tokenisers keep 77-100 tokens, and a megabyte of text is an attack or a broken generator.
MAX_CAPTION_CHARS = 4000  # ~15x the 90-word QA limit
MIN_COVER = 0.5

# precomputed augmented copies of the release, in its folder order (Darkimage/, Lightimage/, Noisyimage/)
AUGMENTED: tuple[str, ...] = ("dark", "light", "noisy")



# an image or vehicle id: it names files (exports, masks) and URLs and is written into pages, so every
# source that brings ids in refuses any other character (no markup, no path can be an id)
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
ID_RULE = "letters, digits, '_' and '-'"


def is_id(value: str) -> bool:
    """Whether `value` is a whole id under ID_PATTERN (fullmatch: a trailing newline is not allowed)."""
    return ID_PATTERN.fullmatch(value) is not None


TEST_RATIO = 0.3
DEFAULT_SEED = 0

# the augmented copies t2iverw makes when a build has none from the release (`--augmented-copies`):
# out = 255 * (in / 255) ** gamma, and additive Gaussian noise of this std (0-255 scale), seeded per image
AUGMENT_GAMMA: dict[str, float] = {"dark": 2.0, "light": 0.5}
AUGMENT_NOISE_STD = 20.0


def query_id(caption_id: str, k: int) -> str:
    """The evaluation id of caption k of an image: the first keeps the image's caption_id."""
    return caption_id if k == 0 else f"{caption_id}#{k}"


def caption_list(captions: list[str] | None, caption: str | None) -> list[str]:
    """Every caption of an image in order: `captions` (a record's `texts`) when it holds any, else the one `caption`.

    Export, evaluation, training and the baselines all read captions through this, so caption k
    has the same query id everywhere (an empty string keeps its place instead of shifting later ids).
    """
    return list(captions) if captions else ([] if caption is None else [caption])

