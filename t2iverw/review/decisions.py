"""A reviewer's decisions, appended to the build as caption records with `source: human`.

Accept keeps the caption, edit replaces it, reject sends the image back to `caption`.
Every record names the reviewer and the machine caption it was judged against
(`edited_from`), so the export can tell human-accepted from human-edited captions and a
later reviewer always compares with what the model wrote.
"""

from __future__ import annotations

import re
import threading
from contextlib import ExitStack
from pathlib import Path

from t2iverw.build import BuildDir
from t2iverw.errors import T2IError
from t2iverw.runner import LogWriter, open_log

ACTIONS = ("accept", "save", "reject")
REVIEWER_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")  # what the runner accepts in `review-<name>`


def check_reviewer(name: str) -> str:
    """A reviewer name that can be part of a log file name."""
    if not REVIEWER_RE.match(name or ""):
        raise T2IError(f"reviewer name {name!r} must be 1-64 lower-case letters, digits, '.', '_' or '-' "
                       f"(it names the build's captions/review-<name> log)")
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
    """The review app's one writer: the build's `captions/review-<reviewer>` log, held for the app's lifetime.

    Holding it makes a second app of the same reviewer on the same build fail at start
    (the runner's lock), while `caption` and `segment` runs write their own logs beside it.
    """

    def __init__(self, build: BuildDir, reviewer: str):
        self.build, self.reviewer = build, check_reviewer(reviewer)
        self.settings = {"reviewer": reviewer, "tool": "t2iverw review"}
        self._lock = threading.Lock()
        self._stack = ExitStack()
        self._log: LogWriter | None = None

    def open(self) -> DecisionLog:
        self._log = self._stack.enter_context(
            open_log(self.build, "captions", log=f"review-{self.reviewer}", source="human", settings=self.settings))
        return self

    def close(self) -> None:
        self._log = None
        self._stack.close()

    def __enter__(self) -> DecisionLog:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, record: dict, after: dict) -> dict:
        """Append one decision, durable before the app answers, ordered after `after` (the record it judged)."""
        with self._lock:
            if self._log is None:
                raise T2IError("the review log is closed")
            self._log.configure(self.settings, floor=after.get("t", 0))
            return self._log.append([record])[0]

    @property
    def path(self) -> Path:
        """The log file this app appends to."""
        if self._log is None:
            raise T2IError("the review log is closed")
        return self._log.path
