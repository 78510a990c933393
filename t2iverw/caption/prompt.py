"""The caption prompt: a template file plus metadata hints.

The template's SHA-256 and the hint mode are stored with every caption, so a dataset
states exactly which prompt wrote it; `--prompt FILE` swaps the shipped `prompts/caption.md`.

Hints cut colour and type hallucination, but a caption is a witness's description: by
default (`witness`) the model is told only what a witness could see, body colour and body
type. The make and model (`model`) would put identity-linked facts no witness knows into
the queries, so they are hinted only on request.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from t2iverw.errors import T2IError

HINTS_SLOT = "{hints}"
# hint mode -> the metadata fields it states, as (index column, word in the prompt)
HINT_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "none": (),
    "witness": (("color", "colour"), ("type", "type")),
    "model": (("color", "colour"), ("type", "type"), ("model", "model")),
}
DEFAULT_HINTS = "witness"


@dataclass(frozen=True)
class Prompt:
    template: str
    source: str
    hints: str = DEFAULT_HINTS

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.template.encode("utf-8")).hexdigest()

    def render(self, meta: dict) -> str:
        """The prompt text for one image; the metadata hint cuts colour/type hallucination."""
        hint = hint_text(meta, self.hints)
        text = self.template.replace(HINTS_SLOT, hint) if HINTS_SLOT in self.template else f"{self.template.rstrip()}\n{hint}"
        return text.strip() + "\n"


def load_prompt(path: str | Path | None = None, *, hints: str = DEFAULT_HINTS) -> Prompt:
    """The shipped prompt, or the one at `path`, with hint mode `hints` (none, witness, model)."""
    if hints not in HINT_FIELDS:
        raise T2IError(f"--hints must be one of {', '.join(HINT_FIELDS)}, got {hints!r}")
    if path is None:
        resource = importlib.resources.files("t2iverw.prompts") / "caption.md"
        return Prompt(resource.read_text(encoding="utf-8"), "t2iverw.prompts/caption.md", hints)
    path = Path(path)
    try:
        template = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise T2IError(f"cannot read prompt file {path}: {exc}") from None
    if not template.strip():
        raise T2IError(f"prompt file {path} is empty")
    return Prompt(template, str(path), hints)


def hint_text(meta: dict, mode: str = DEFAULT_HINTS) -> str:
    """A sentence stating the metadata the hint mode allows; empty fields are left out rather than guessed."""
    facts = [f"{word}: {meta[key]}" for key, word in HINT_FIELDS[mode] if meta.get(key)]
    if not facts:
        return ""
    return "Metadata from the dataset (trust it over your own impression): " + "; ".join(facts) + "."
