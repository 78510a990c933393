"""Unsaved caption edits, kept on disk so closing the app or the browser mid-edit loses nothing.

The page sends its text a moment after each keystroke; a draft lives until a decision on
its image is written. Drafts are not records: they never reach `caption` or `export`.
The file is rewritten atomically, so a kill leaves the old or the new version, never half.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone

from t2iverw.build import BuildDir
from t2iverw.storage import write_json

DRAFTS_DIR = "review"


class Drafts:
    """image_id -> {"text", "time"} of one reviewer, in BUILD/review/drafts-<reviewer>.json."""

    def __init__(self, build: BuildDir, reviewer: str):
        self.path = build.root / DRAFTS_DIR / f"drafts-{reviewer}.json"
        self._lock = threading.Lock()
        self._items: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, image_id: str) -> dict | None:
        return self._items.get(image_id)

    def put(self, image_id: str, text: str) -> dict:
        draft = {"text": text, "time": datetime.now(timezone.utc).isoformat()}
        with self._lock:
            self._items[image_id] = draft
            write_json(self.path, self._items)
        return draft

    def drop(self, image_id: str) -> None:
        with self._lock:
            if self._items.pop(image_id, None) is not None:
                write_json(self.path, self._items)
