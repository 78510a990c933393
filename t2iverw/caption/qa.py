"""Caption quality: rejecting bad model replies, and flagging captions for human review.

Two levels. `reply_problem` decides whether a model reply is usable at all (empty, cut
off, refusal, repetition loop): such replies are retried once and then recorded as
failed. `qa_flags` marks usable captions that a reviewer should read first: too short
or long, whole attribute families missing, colour or type contradicting the VERI-Wild
metadata, boilerplate openings, repetition. Flags are advice, never a reason to drop.

Flags are a pure function of a caption's text and its image's metadata, so `caption-qa`
only reads: it never writes into a log another process may be appending to. Each
caption record keeps the flags of the rules it was made under (`qa`); the export's
`caption_flags` column applies the current rules.
"""

from __future__ import annotations

import re
import statistics
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc

from t2iverw.build import BuildDir
from t2iverw.runner.columnar import latest_columns

MIN_WORDS = 30
MAX_WORDS = 90
PAPER_MEAN_WORDS = 50.35
QA_BATCH = 4096  # captions read back and flagged together

FAMILIES: dict[str, re.Pattern] = {
    "lights": re.compile(r"light|lamp"),
    "wheels": re.compile(r"wheel|spoke|hubcap|\b(rim|tyre|tire)s?\b"),
    "windows": re.compile(r"window|windshield|windscreen|\bglass"),
    "roof": re.compile(r"roof"),
}
# canonical name -> words that name it; the metadata value is mapped through the same table.
COLOURS: dict[str, tuple[str, ...]] = {
    "white": ("white",), "black": ("black",), "silver": ("silver",), "gray": ("gray", "grey"),
    "red": ("red",), "blue": ("blue",), "yellow": ("yellow",), "green": ("green",), "brown": ("brown",),
    "gold": ("gold", "golden", "champagne"), "orange": ("orange",), "purple": ("purple",), "pink": ("pink",),
}
TYPES: dict[str, tuple[str, ...]] = {
    "sedan": ("sedan", "saloon"), "suv": ("suv",), "hatchback": ("hatchback",), "mpv": ("mpv", "minivan"),
    "pickup": ("pickup", "pick-up"), "bus": ("bus",), "truck": ("lorry", "truck"), "van": ("van",),
}
REFUSAL = re.compile(r"\b(i'?m sorry|i am sorry|i can(?:no|')t|i am unable|i'm unable|as an ai)\b", re.I)
BOILERPLATE = re.compile(r"^\s*(the|this|in the) (image|photo|picture|photograph)\b|^\s*this is an? (image|photo|picture)", re.I)
LOOP_PERIOD = 8  # longest repeating unit looked for, in words and in characters
LOOP_REPEATS = 4  # a phrase said 4 times in a row is a loop; characters need 8 ("8888" may be a sticker)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9][a-z0-9'-]*", text.lower())


def has_loop(seq: list | str, max_period: int = LOOP_PERIOD, repeats: int = LOOP_REPEATS) -> bool:
    """Some unit of 1..max_period items repeated `repeats` times back to back (linear time per period)."""
    for period in range(1, max_period + 1):
        run = 0
        for i in range(period, len(seq)):
            run = run + 1 if seq[i] == seq[i - period] else 0
            if run >= period * (repeats - 1):
                return True
    return False


def is_repetitive(text: str) -> bool:
    """A degenerate loop: a phrase (or, in unspaced scripts, a few characters) repeated back to back,
    or few distinct word trigrams."""
    w = words(text)
    if has_loop(w) or has_loop(text, repeats=2 * LOOP_REPEATS):
        return True
    trigrams = list(zip(w, w[1:], w[2:]))
    return len(trigrams) >= 12 and len(set(trigrams)) / len(trigrams) < 0.6


def reply_problem(text: str, finish_reason: str | None) -> str | None:
    """Why a model reply cannot be a caption (None when it can)."""
    if not text.strip():
        return "empty"
    if finish_reason == "length":
        return "cut_off"
    if REFUSAL.search(text):
        return "refusal"
    if is_repetitive(text):
        return "repetitive"
    return None


AGREEMENT = ("agrees", "contradicts", "not mentioned", "metadata not in vocabulary")


def present_words(text: str) -> set[str]:
    """The caption's words, and each without a plural 's' (so 'wheels' names 'wheel')."""
    w = words(text)
    return set(w) | {x.rstrip("s") for x in w}


def agreement(vocab: dict[str, tuple[str, ...]], value: str | None, present: set[str]) -> str:
    """How a caption's words (`present_words`) stand to the metadata `value`, one of AGREEMENT.

    It contradicts when it names some entry of `vocab` but none that `value` names; a value
    outside `vocab` cannot be checked (and so never contradicts).
    """
    tokens = set(words(value or ""))
    accepted = {n for k, names in vocab.items() if tokens & {k, *names} for n in names}
    if not accepted:
        return "metadata not in vocabulary"
    if present & accepted:
        return "agrees"
    return "contradicts" if any(present & set(names) for names in vocab.values()) else "not mentioned"


def qa_flags(text: str, meta: dict) -> list[str]:
    """Review flags of one caption given its image's VERI-Wild metadata (color, type)."""
    low = text.lower()
    w = words(text)
    present = present_words(text)
    flags = []
    if len(w) < MIN_WORDS:
        flags.append("too_short")
    if len(w) > MAX_WORDS:
        flags.append("too_long")
    for family, pattern in FAMILIES.items():
        if not pattern.search(low):
            flags.append(f"missing_{family}")
    if agreement(COLOURS, meta.get("color"), present) == "contradicts":
        flags.append("colour_mismatch")
    if agreement(TYPES, meta.get("type"), present) == "contradicts":
        flags.append("type_mismatch")
    if REFUSAL.search(text):
        flags.append("refusal")
    if BOILERPLATE.search(text):
        flags.append("boilerplate")
    if is_repetitive(text):
        flags.append("repetitive")
    return flags


@dataclass
class QASummary:
    captions: int = 0
    flagged: int = 0
    by_flag: dict[str, int] = field(default_factory=dict)
    words_mean: float = 0.0
    words_median: float = 0.0
    words_min: int = 0
    words_max: int = 0

    def lines(self) -> list[str]:
        out = [f"caption QA: {self.captions} captions, {self.flagged} flagged for review"]
        if self.captions:
            out.append(f"  words: mean {self.words_mean:.2f} (paper {PAPER_MEAN_WORDS}), median {self.words_median:g}, "
                       f"min {self.words_min}, max {self.words_max}")
        out += [f"  {flag}: {n}" for flag, n in sorted(self.by_flag.items(), key=lambda kv: -kv[1])]
        return out


def run_qa(build: str | Path | BuildDir) -> QASummary:
    """Flag every ok caption of `build` by the current rules and summarise; reads only.

    Columnar, so 416k captions cost a few Arrow columns, not a dict per image: where each
    image's latest record lies (`latest_columns`), its metadata aligned to it, and one
    small word count per caption; the records themselves are read back a batch at a time,
    in log order.
    """
    build = build if isinstance(build, BuildDir) else BuildDir.open(build)
    latest = latest_columns(build.root, "captions").ok()
    images = build.images(["image_id", "color", "type"])
    at = pc.index_in(latest.table["image_id"], value_set=images["image_id"])  # each caption's index row
    order = pc.sort_indices(latest.table, [("log", "ascending"), ("offset", "ascending")])
    summary = QASummary()
    counts = array("l")
    for start in range(0, len(order), QA_BATCH):
        rows = order.slice(start, QA_BATCH)
        meta = images.select(["color", "type"]).take(at.take(rows)).to_pylist()
        for rec, m in zip(latest.fetch(rows.to_pylist()), meta):
            flags = qa_flags(rec["text"], m)
            counts.append(len(words(rec["text"])))
            summary.flagged += bool(flags)
            for f in flags:
                summary.by_flag[f] = summary.by_flag.get(f, 0) + 1
    summary.captions = len(counts)
    if counts:
        summary.words_mean = statistics.fmean(counts)
        summary.words_median = statistics.median(counts)
        summary.words_min, summary.words_max = min(counts), max(counts)
    return summary
