"""No-learning reference points for a benchmark table: chance, and matching colour words to pixels.

The colour baseline reads the colour word(s) of each caption and scores each gallery
image by how close its dominant pixel colour is to that colour's standard RGB (CSS
names via Pillow). It looks only at pixels, never at the metadata colour column, so
it is an honest floor a learned model must clear. Both return a queries x gallery
score matrix in the default evaluation order (ids sorted), for `evaluate_predictions`,
as `RowScores`: rows are made when the evaluation reads them, a block at a time, so a
VERI-Wild-sized test split (125k x 125k scores) never sits in memory.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageColor
from tqdm import tqdm

from t2iverw.build import IMAGES, BuildDir
from t2iverw.errors import T2IError
from t2iverw.constants import caption_list, query_id
from t2iverw.evaluation.inputs import ground_truth

# Body colours a vehicle caption may name; their RGB comes from Pillow's CSS colour table.
COLOUR_WORDS: tuple[str, ...] = ("white", "black", "silver", "gray", "grey", "red", "blue", "yellow", "green",
                                 "brown", "orange", "purple", "pink", "gold", "beige", "tan", "maroon", "navy")
THUMB = 48  # pixels per side when looking for the dominant colour
LEVELS = 8  # quantisation levels per channel for the colour histogram


class RowScores:
    """A queries x gallery score matrix whose rows `rows(start, stop)` makes on demand.

    It is what `score_metrics` reads (`shape`, row slices); `np.asarray` makes the whole matrix.
    """

    def __init__(self, shape: tuple[int, int], rows: Callable[[int, int], np.ndarray]) -> None:
        self.shape, self.ndim, self._rows = shape, 2, rows

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("RowScores reads contiguous row slices only")
        start, stop, _ = key.indices(self.shape[0])
        return self._rows(start, max(start, stop))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


def random_scores(dataset: str | Path, seed: int = 0) -> RowScores:
    """Uniform random scores: the chance level of the test split.

    Row q is drawn from its own seed (seed, q), so a row is the same whichever block reads it.
    """
    truth = ground_truth(dataset)
    width = len(truth.gallery_ids)

    def rows(start: int, stop: int) -> np.ndarray:
        block = np.empty((stop - start, width))
        for row, q in zip(block, range(start, stop)):  # drawn in place: one block in memory, not rows + a stack
            np.random.default_rng([seed, q]).random(out=row)
        return block

    return RowScores((len(truth.query_ids), width), rows)


def colour_word_scores(dataset: str | Path) -> RowScores:
    """Minus the RGB distance between a caption's colour word and each image's dominant colour.

    A caption naming several colours takes the closest; one naming none scores every
    image 0 (ties, so gallery order decides: no information).
    """
    truth = ground_truth(dataset)  # also checks the dataset has a test split
    texts, images = _test_texts_and_images(Path(dataset))
    dominant = np.stack([dominant_colour(images[i]()) for i in tqdm(truth.gallery_ids, desc="colours", unit="img")])
    del images
    named = [caption_colours(texts[qid]) for qid in truth.query_ids]

    def rows(start: int, stop: int) -> np.ndarray:
        block = np.zeros((stop - start, len(dominant)))
        for row, colours in zip(block, named[start:stop]):
            if colours:
                row[:] = -np.min([np.linalg.norm(dominant - rgb, axis=1) for rgb in colours], axis=0)
        return block

    return RowScores((len(truth.query_ids), len(dominant)), rows)


def caption_colours(text: str) -> list[np.ndarray]:
    """RGB of every colour word in `text`."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    return [np.array(ImageColor.getrgb(w), float) for w in COLOUR_WORDS if w in words]


def dominant_colour(image: Image.Image) -> np.ndarray:
    """Mean RGB of the most populated colour bin in the central half of the image (where the vehicle is)."""
    w, h = image.size
    centre = image.convert("RGB").crop((w // 4, h // 4, w - w // 4, h - h // 4)).resize((THUMB, THUMB))
    pixels = np.asarray(centre, float).reshape(-1, 3)
    bins = (pixels * LEVELS / 256).astype(int) @ np.array([LEVELS * LEVELS, LEVELS, 1])
    return pixels[bins == np.bincount(bins).argmax()].mean(axis=0)


def _test_texts_and_images(dataset: Path) -> tuple[dict[str, str], dict[str, Callable[[], Image.Image]]]:
    """(caption id -> caption text, image id -> a function opening the image) of the test split."""
    if (dataset / IMAGES).exists():
        bd = BuildDir.open(dataset)
        texts = {query_id(r.get("caption_id", i), k): t for i, r in bd.captions().items()
                 for k, t in enumerate(caption_list(r.get("texts"), r["text"]))}
        rows = bd.images(["image_id", "path"]).to_pylist()
        return texts, {r["image_id"]: _opener(bd.image_path(r["path"])) for r in rows}
    files = sorted((dataset / "data").glob("test-*.parquet"))
    schema = pq.read_schema(files[0])
    if "image" not in schema.names:
        raise T2IError(f"{dataset} is an annotations-only export (no image column); "
                       "run the colour baseline on the build directory instead")
    columns = ["image_id", "caption_id", "caption", "image"] + (["captions"] if "captions" in schema.names else [])
    table = pa.concat_tables(pq.read_table(f, columns=columns) for f in files)
    texts, images = {}, {}
    for row in table.to_pylist():
        for k, text in enumerate(caption_list(row.get("captions"), row["caption"])):
            texts[query_id(row["caption_id"], k)] = text
        images[row["image_id"]] = _opener(io.BytesIO(row["image"]["bytes"]))
    return texts, images


def _opener(source: Path | io.BytesIO) -> Callable[[], Image.Image]:
    return lambda: Image.open(source)
