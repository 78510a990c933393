"""The part prompts (`prompts/parts.yaml`): which texts SAM3 reads for each of the six parts.

Every stored per-part value follows `PARTS` order, so a prompt file that names other
categories, or the same ones in another order, is refused before any model is loaded.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import yaml

from t2iverw.constants import PARTS
from t2iverw.errors import T2IError


@dataclass(frozen=True)
class PartPrompts:
    name: str
    text: str
    threshold: float
    prompts: tuple[str, ...]


def default_parts_path() -> Path:
    return Path(str(importlib.resources.files("t2iverw.prompts") / "parts.yaml"))


def parts_path(path: str | Path | None = None) -> Path:
    """`path`, or the shipped parts.yaml when None."""
    return Path(path) if path is not None else default_parts_path()


def load_parts(path: str | Path | None = None) -> list[PartPrompts]:
    """The six categories of a parts file (the shipped one when `path` is None), validated."""
    path = parts_path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise T2IError(f"cannot read parts file {path}: {err}") from err
    cats = doc.get("categories") if isinstance(doc, dict) else None
    names = [c.get("name") if isinstance(c, dict) else None for c in cats or []]
    if names != list(PARTS):
        raise T2IError(f"{path}: `categories` must name {', '.join(PARTS)} in that order, got {names}")
    return [_category(path, c) for c in cats]


def _category(path: Path, cat: dict) -> PartPrompts:
    name = cat["name"]
    prompts = cat.get("prompts")
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise T2IError(f"{path}: category {name!r} needs a non-empty list of text prompts")
    threshold = cat.get("threshold")
    if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise T2IError(f"{path}: category {name!r} needs a threshold between 0 and 1, got {threshold!r}")
    text = cat.get("text") or f"Car {name}"
    return PartPrompts(name=name, text=str(text), threshold=float(threshold), prompts=tuple(prompts))
