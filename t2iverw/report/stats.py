"""The numbers of a report, as pandas tables computed from a `Dataset` (no plotting, no HTML).

Word counts, colour and type vocabularies come from `t2iverw.caption.qa`, so the report
measures captions by the same rules that flag them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from t2iverw.caption.qa import AGREEMENT, COLOURS, FAMILIES, PAPER_MEAN_WORDS, TYPES, agreement, present_words, words
from t2iverw.constants import GRID, PARTS
from t2iverw.report.load import Dataset

# what the caption prompt asks for (prompts/caption.md) -> how a caption names it
ATTRIBUTES: dict[str, re.Pattern] = {
    "grille": re.compile(r"\bgrill(e|es|s)?\b"),
    "headlights": re.compile(r"\bhead[\s-]?(light|lamp)s?\b"),
    "wheels": FAMILIES["wheels"],
    "roof": FAMILIES["roof"],
    "windows": FAMILIES["windows"],
    "bumper": re.compile(r"\bbumpers?\b"),
    "body colour": re.compile(r"\b(" + "|".join(sorted({n for ns in COLOURS.values() for n in ns})) + r")\b"),
}
TOP_FLAGGED = 10


@dataclass
class CaptionStats:
    captions: int
    images: int
    mean_words: float
    median_words: float
    vocabulary: int
    lengths: np.ndarray
    coverage: pd.DataFrame
    agreement: pd.DataFrame
    flags: pd.DataFrame
    flagged_images: int
    most_flagged: pd.DataFrame
    paper_mean: float = PAPER_MEAN_WORDS


def split_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Identities and images per split, with a total row."""
    table = frame.groupby("split", sort=False).agg(identities=("vehicle_id", "nunique"), images=("image_id", "size"))
    order = [s for s in ("train", "val", "test", "unsplit") if s in table.index] + \
        sorted(s for s in table.index if s not in ("train", "val", "test", "unsplit"))
    table = table.loc[order]
    total = pd.DataFrame({"identities": [frame["vehicle_id"].nunique()], "images": [len(frame)]}, index=["total"])
    return pd.concat([table, total]).rename_axis("split").reset_index()


def images_per_identity(frame: pd.DataFrame) -> pd.Series:
    return frame.groupby("vehicle_id").size()


def caption_stats(frame: pd.DataFrame) -> CaptionStats:
    """Length, vocabulary, attribute coverage, metadata agreement and QA flags of every caption."""
    captioned = frame[frame["texts"].notna()]
    texts = [t for ts in captioned["texts"] for t in ts]
    tokens = [words(t) for t in texts]
    lengths = np.array([len(w) for w in tokens], dtype=np.int64)
    lowered = [t.lower() for t in texts]
    coverage = pd.DataFrame({
        "attribute": list(ATTRIBUTES),
        "share of captions": [np.mean([bool(p.search(t)) for t in lowered]) if texts else np.nan
                              for p in ATTRIBUTES.values()],
    })
    # agreement is judged on each image's first caption against that image's metadata
    first = [present_words(ts[0]) for ts in captioned["texts"]]
    agreement = pd.DataFrame([
        {"metadata": name, **_agreement(vocab, captioned[col].tolist(), first)}
        for name, col, vocab in (("colour", "color", COLOURS), ("type", "type", TYPES))
    ])
    flag_lists = captioned["flags"].apply(lambda f: list(f) if f is not None else [])
    counts = Counter(f for fl in flag_lists for f in fl)
    flags = pd.DataFrame(counts.most_common(), columns=["flag", "captions"])
    n_flags = flag_lists.apply(len)
    top = captioned.assign(n_flags=n_flags).query("n_flags > 0") \
        .sort_values(["n_flags", "image_id"], ascending=[False, True]).head(TOP_FLAGGED)
    most_flagged = pd.DataFrame({
        "image_id": top["image_id"], "vehicle_id": top["vehicle_id"], "flags": top["flags"].apply(", ".join),
        "caption": top["texts"].apply(lambda ts: _shorten(ts[0])),
    })
    return CaptionStats(
        captions=len(texts), images=len(captioned),
        mean_words=float(lengths.mean()) if len(lengths) else float("nan"),
        median_words=float(np.median(lengths)) if len(lengths) else float("nan"),
        vocabulary=len({w for ws in tokens for w in ws}), lengths=lengths, coverage=coverage,
        agreement=agreement, flags=flags, flagged_images=int((n_flags > 0).sum()), most_flagged=most_flagged,
    )


def _agreement(vocab: dict[str, tuple[str, ...]], values: list, captions: list[set[str]]) -> dict:
    """Shares of captions that name the metadata value, name another one, name none, or cannot be checked."""
    out = Counter(agreement(vocab, value, present) for value, present in zip(values, captions))
    total = max(1, len(captions))
    return {k: out[k] / total for k in AGREEMENT}


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


@dataclass
class PartStats:
    segmented: int
    table: pd.DataFrame
    heatmaps: np.ndarray  # (parts, grid_h, grid_w): share of segmented images whose grid has the cell on


def part_stats(data: Dataset) -> PartStats:
    """Presence and area per part, and the mean grid of each part over the segmented images."""
    grids = data.grids
    n = len(grids)
    if n == 0:  # nothing segmented yet (an indexed or captioned build): an empty section, not a crash
        grids = np.zeros((0, len(PARTS), *GRID), dtype=bool)
    on = grids.reshape(n, len(PARTS), int(np.prod(grids.shape[2:])))  # explicit: -1 is ambiguous at n = 0
    table = pd.DataFrame({
        "part": list(PARTS),
        "present (grid)": on.any(axis=2).mean(axis=0) if n else np.full(len(PARTS), np.nan),
        "mean grid area": on.mean(axis=2).mean(axis=0) if n else np.full(len(PARTS), np.nan),
    })
    if data.mask_area is not None and len(data.mask_area):
        table["present (mask)"] = (data.mask_area > 0).mean(axis=0)
        table["mean mask area"] = data.mask_area.mean(axis=0)
    heatmaps = grids.mean(axis=0) if n else np.zeros(grids.shape[1:])
    return PartStats(segmented=n, table=table, heatmaps=heatmaps)
