"""Constants every stage agrees on: the part order, the patch grid and the file names.

The part order is fixed by the paper (windows, lights, wheels, mirrors, roof, doors);
everything that stores one value per part stores it in this order.
"""

from __future__ import annotations

PARTS: tuple[str, ...] = ("windows", "lights", "wheels", "mirrors", "roof", "doors")
PART_TEXT: tuple[str, ...] = tuple(f"Car {p}" for p in PARTS)

INPUT_SIZE = 384
PATCH_SIZE = 16
GRID: tuple[int, int] = (INPUT_SIZE // PATCH_SIZE, INPUT_SIZE // PATCH_SIZE)  # 24 x 24
MIN_COVER = 0.5

# precomputed augmented copies of the release, in its folder order (Darkimage/, Lightimage/, Noisyimage/)
AUGMENTED: tuple[str, ...] = ("dark", "light", "noisy")

TEST_RATIO = 0.3
DEFAULT_SEED = 0

# the augmented copies t2iverw makes when a build has none from the release (`--augmented-copies`):
# out = 255 * (in / 255) ** gamma, and additive Gaussian noise of this std (0-255 scale), seeded per image
AUGMENT_GAMMA: dict[str, float] = {"dark": 2.0, "light": 0.5}
AUGMENT_NOISE_STD = 20.0
