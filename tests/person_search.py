"""A writer of the person-search annotation layouts (IRRA's readers; shared/baselines.md), written
from their description and sharing no code with t2iverw.release:

    CUHK-PEDES/reid_raw.json       [{"id", "file_path", "captions", "split", "processed_tokens"}]
    ICFG-PEDES/ICFG-PEDES.json     [{"id", "file_path", "captions", "split", "processed_tokens"}]
    RSTPReid/data_captions.json    [{"id", "img_path", "captions", "split"}]

with images under imgs/. Files of different source sets share a stem, as CUHK-PEDES's do.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image

LAYOUTS = {  # format: (folder, annotation file, path field, splits, captions per image)
    "cuhk-pedes": ("CUHK-PEDES", "reid_raw.json", "file_path", ("train", "val", "test"), 2),
    "icfg-pedes": ("ICFG-PEDES", "ICFG-PEDES.json", "file_path", ("train", "test"), 1),
    "rstpreid": ("RSTPReid", "data_captions.json", "img_path", ("train", "val", "test"), 2),
}
SOURCES = ("CUHK01", "CUHK03", "Market")


def write_person_set(parent: Path, fmt: str, *, persons: int = 9, per_person: int = 3, seed: int = 0) -> dict:
    """Write the `fmt` dataset under `parent`; returns {"root", "records", "expected_ids"}.

    Identities are dealt to the splits in turn (train twice as often), ids start at 1 as
    CUHK-PEDES's do. `expected_ids` maps each record's path below imgs/ to the image id the
    build must give it: its folders joined by "__", the extension dropped.
    """
    folder, annotations, path_field, splits, n_captions = LAYOUTS[fmt]
    root = parent / folder
    rng = random.Random(seed)
    deal = ["train", "train", *splits[1:]]
    records, expected = [], {}
    for person in range(1, persons + 1):
        split = deal[(person - 1) % len(deal)]
        colour = tuple(rng.randrange(256) for _ in range(3))
        for k in range(per_person):
            source = SOURCES[k % len(SOURCES)]
            name = f"{person:04d}{k // len(SOURCES)}"  # the same stem recurs under each source folder
            rel = f"{source}/{name}.{'png' if source == 'CUHK01' else 'jpg'}"
            (root / "imgs" / source).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (rng.randint(40, 64), rng.randint(100, 128)), colour).save(root / "imgs" / rel)
            captions = [f"A person {person} in view {k}, description {c}, wearing a coat." for c in range(n_captions)]
            record = {"id": person, path_field: rel, "captions": captions, "split": split}
            if path_field == "file_path":
                record["processed_tokens"] = [c.lower().split() for c in captions]
            records.append(record)
            expected[rel] = f"{source}__{name}"
    # the same stem under two source folders: the ids must still differ
    assert len(set(expected.values())) == len(expected) and len({Path(p).stem for p in expected}) < len(expected)
    (root / annotations).write_text(json.dumps(records))
    return {"root": root, "records": records, "expected_ids": expected, "path_field": path_field}
