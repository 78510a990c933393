"""The caption prompt: a template file plus optional VERI-Wild metadata hints.

The template's SHA-256 is stored with every caption, so a dataset states exactly which
prompt wrote it; `--prompt FILE` swaps the shipped `prompts/caption.md`.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from t2iverw.errors import T2IError

HINTS_SLOT = "{hints}"


@dataclass(frozen=True)
class Prompt:
    template: str
    source: str
    hints: bool = True

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.template.encode("utf-8")).hexdigest()

    def render(self, meta: dict) -> str:
        """The prompt text for one image; the metadata hint cuts colour/type hallucination."""
        hint = hint_text(meta) if self.hints else ""
        text = self.template.replace(HINTS_SLOT, hint) if HINTS_SLOT in self.template else f"{self.template.rstrip()}\n{hint}"
        return text.strip() + "\n"


def load_prompt(path: str | Path | None = None, *, hints: bool = True) -> Prompt:
    """The shipped prompt, or the one at `path`."""
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


def hint_text(meta: dict) -> str:
    """A sentence stating the known metadata; empty fields are left out rather than guessed."""
    facts = [f"{name}: {meta[key]}" for key, name in (("color", "colour"), ("type", "type"), ("model", "model"))
             if meta.get(key)]
    if not facts:
        return ""
    return "Metadata from the dataset (trust it over your own impression): " + "; ".join(facts) + "."
