"""A reviewer's decisions, appended to the build as caption records with `source: human`.

Accept keeps the caption, edit replaces it, reject sends the image back to `caption`.
Every record names the reviewer and the machine caption it was judged against
(`edited_from`), so the export can tell human-accepted from human-edited captions and a
later reviewer always compares with what the model wrote.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timezone

from t2iverw.build import BuildDir
from t2iverw.errors import T2IError
from t2iverw.storage import JsonlWriter

ACTIONS = ("accept", "save", "reject")
REVIEWER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_reviewer(name: str) -> str:
    """A reviewer name that can be part of a log file name."""
    if not REVIEWER_RE.match(name or ""):
        raise T2IError(f"reviewer name {name!r} must be 1-64 letters, digits, '.', '_' or '-' (it names the review log)")
    return name


def decision_record(image_id: str, action: str, text: str, machine_text: str, reviewer: str,
                    texts: list[str] | None = None) -> dict:
    """The caption record of one decision; `save` becomes `edit` only when the text really changed."""
    if action not in ACTIONS:
        raise T2IError(f"unknown action {action!r}; choose one of {', '.join(ACTIONS)}")
    if action == "save":  # a typed caption: one paragraph; unchanged up to spacing is an accept
        text = " ".join(text.split())
        if not text:
            raise T2IError("the caption is empty; write one or reject the image")
        same = text == " ".join(machine_text.split())
        action, text = ("accept", machine_text) if same else ("edit", text)
    record = {
        "image_id": image_id,
        "status": "rejected" if action == "reject" else "ok",
        "text": text,
        "action": action,
        "reviewer": reviewer,
        "edited_from": machine_text,
    }
    if texts and len(texts) > 1:  # a release lists several captions: the review replaces the first only
        record["texts"] = [text, *texts[1:]]
    return record


class DecisionLog:
    """The review app's one writer: one open log per reviewer for the app's lifetime."""

    def __init__(self, build: BuildDir, reviewer: str):
        self.build, self.reviewer = build, check_reviewer(reviewer)
        self._lock = threading.Lock()
        self._log: JsonlWriter | None = None

    def open(self) -> DecisionLog:
        self._log = self.build.log_writer("captions")
        return self

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def write(self, record: dict) -> dict:
        """Append one decision and make it durable before the app answers; returns what was written."""
        record = {**record, "source": "human", "time": datetime.now(timezone.utc).isoformat()}
        with self._lock:
            if self._log is None:
                raise T2IError("the review log is closed")
            self._log.write(record)
        return record
