"""Which annotation format a root holds: the T2I-VeRW / T2I-VeRI release, or a person-search set.

Every format becomes the same checked `Record`s, so the importer has one path for all.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from t2iverw.errors import T2IError
from t2iverw.release import layout, persons

RELEASE = "release"
FORMAT_NAMES = ("auto", RELEASE, *persons.FORMATS)


@dataclass(frozen=True)
class Source:
    format: str  # "release" or a person-search format name
    dataset: str
    annotations: Path
    check: Callable[[object, int], layout.Record]
    published: Callable[[object], dict | None]  # a raw record's id, split and image, for the split
    augmented: bool  # whether the release's dark/light/noisy copies can exist beside the images


def find_source(root: Path, fmt: str = "auto") -> Source:
    """The source at `root` in format `fmt` ("auto": whichever known annotation file it holds)."""
    if not root.is_dir():
        raise T2IError(f"release root {root} does not exist or is not a directory")
    if fmt == "auto":
        person = persons.detect(root)
        has_release = any((root / name).is_file() for name in layout.ANNOTATIONS.values())
        if person is not None and has_release:
            raise T2IError(f"{root} holds both a release annotation file and {person.annotations}; "
                           "name one with --format")
        if person is None and not has_release:
            names = ", ".join([*layout.ANNOTATIONS.values(), *(f.annotations for f in persons.FORMATS.values())])
            raise T2IError(f"{root} holds no annotation file this command reads (expected one of {names})")
        fmt = RELEASE if person is None else person.name
    if fmt == RELEASE:
        dataset, annotations = layout.find_annotations(root)
        return Source(RELEASE, dataset, annotations, layout.check_record, release_entry, augmented=True)
    if fmt not in persons.FORMATS:
        raise T2IError(f"unknown format {fmt!r}; one of {', '.join(FORMAT_NAMES)}")
    person = persons.FORMATS[fmt]
    return Source(fmt, person.dataset, persons.annotations_of(root, person),
                  partial(persons.check_person_record, person), partial(persons.published_entry, person),
                  augmented=False)


def release_entry(rec: object) -> dict | None:
    if not (isinstance(rec, dict) and "id" in rec and isinstance(rec.get("split"), str)):
        return None
    return {k: rec.get(k) for k in ("id", "split", "file_path")}
