"""What the review app knows about a build: the reviewable images, their captions, flags and review status.

It is read from the build through `BuildDir` only, and read again whenever a caption or
part log changes, so a review can run beside `caption` and `segment` on other shards
and always decides on the newest record. An image is reviewable when its latest caption
record is ok, or a human rejected it (it stays visible until it is captioned again).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from t2iverw.build import BuildDir
from t2iverw.caption.qa import qa_flags
from t2iverw.errors import T2IError
from t2iverw.runner.records import log_paths

SCOPES = ("unreviewed", "flagged", "all")
META = ("vehicle_id", "camera_id", "time", "model", "type", "color", "path", "width", "height")


@dataclass(frozen=True)
class Caption:
    """An image's caption as the reviewer sees it."""

    record: dict  # the latest caption record, any status
    machine_text: str  # what the model (or the release) wrote: a human record's edited_from
    flags: tuple[str, ...]  # QA flags of the machine text by today's rules: why the image is in the flagged queue

    @property
    def reviewed(self) -> bool:
        return self.record.get("source") == "human"

    @property
    def status(self) -> str:
        if not self.reviewed:
            return "unreviewed"
        return {"accept": "accepted", "edit": "edited", "reject": "rejected"}.get(self.record.get("action"), "reviewed")


class ReviewState:
    """The index, the latest caption and part records, and the queues built from them."""

    def __init__(self, build: BuildDir):
        self.build = build
        rows = build.images(["image_id", *META]).to_pylist()
        if not rows:
            raise T2IError(f"{build.root} indexes no images; nothing to review")
        self.rows: dict[str, dict] = {r["image_id"]: r for r in rows}
        self.order = [r["image_id"] for r in rows]
        self._lock = threading.RLock()
        self._signature: dict[str, tuple] = {}
        self.captions: dict[str, Caption] = {}
        self.parts: dict[str, dict] = {}
        self._flag_cache: dict[tuple[str, str], tuple[str, ...]] = {}
        self.refresh()
        if not self.captions:  # the app reviews captions; an empty queue would look like a finished review
            raise T2IError(f"{build.root} has no caption yet, so there is nothing to review; run "
                           f"`t2iverw caption {build.root}` first")

    # --- reading the build ---------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the caption or part records when their logs changed on disk since the last read."""
        with self._lock:
            if self._changed("captions"):
                self.captions = self._read_captions()
            if self._changed("parts"):
                self.parts = self.build.parts()

    def wrote(self, record: dict, log: Path) -> None:
        """Take in a record this app just appended to `log` (its own), without re-reading every log.

        Only when no other caption log changed since the last read: another writer's record
        could be newer, and then the next `refresh` reads them all as usual.
        """
        with self._lock:
            before, now = dict(self._signature.get("captions", ())), dict(self._signature_of("captions"))
            if {k: v for k, v in before.items() if k != log.name} != {k: v for k, v in now.items() if k != log.name}:
                return
            self._signature["captions"] = tuple(now.items())
            cap = self._caption(record)
            if cap is None:
                self.captions.pop(record["image_id"], None)
            else:
                self.captions[record["image_id"]] = cap

    def _changed(self, stage: str) -> bool:
        sig = tuple(self._signature_of(stage).items())
        if self._signature.get(stage) == sig:
            return False
        self._signature[stage] = sig
        return True

    def _signature_of(self, stage: str) -> dict[str, tuple[int, int]]:
        return {p.name: (st.st_size, st.st_mtime_ns) for p in log_paths(self.build.root, stage)
                if (st := _stat(p)) is not None}

    def _read_captions(self) -> dict[str, Caption]:
        caps = (self._caption(rec) for rec in self.build.latest("captions").values())
        return {cap.record["image_id"]: cap for cap in caps if cap is not None}

    def _caption(self, rec: dict) -> Caption | None:
        """The reviewable caption of a latest record: ok, or rejected by a human (None otherwise)."""
        image_id = rec["image_id"]
        human = rec.get("source") == "human"
        if image_id not in self.rows or (rec.get("status") != "ok" and not (human and rec.get("status") == "rejected")):
            return None
        machine = rec.get("edited_from") if human and rec.get("edited_from") is not None else rec["text"]
        return Caption(rec, machine, self.flags_of(image_id, machine))

    def flags_of(self, image_id: str, text: str) -> tuple[str, ...]:
        """QA flags of `text` as a caption of `image_id` (cached: the queue asks for every image)."""
        key = (image_id, text)
        if key not in self._flag_cache:
            self._flag_cache[key] = tuple(qa_flags(text, self.rows[image_id]))
        return self._flag_cache[key]

    # --- queues and counts ------------------------------------------------------------
    def queue(self, scope: str = "unreviewed", flag: str | None = None, query: str | None = None) -> list[str]:
        """Reviewable image ids in index order: the scope's, those with `flag`, or those matching a search.

        A search (an image id, or a vehicle id, or the start of one) looks at every reviewable
        image whatever the scope, because a reviewer searching wants that image.
        """
        if scope not in SCOPES:
            raise T2IError(f"unknown queue {scope!r}; choose one of {', '.join(SCOPES)}")
        self.refresh()
        caps = self.captions
        ids = [i for i in self.order if i in caps]
        if query:
            q = query.strip()
            exact = [i for i in ids if i == q or self.rows[i]["vehicle_id"] == q]
            return exact or [i for i in ids if i.startswith(q) or self.rows[i]["vehicle_id"].startswith(q)]
        if scope == "unreviewed":
            ids = [i for i in ids if not caps[i].reviewed]
        elif scope == "flagged":
            ids = [i for i in ids if caps[i].flags]
        if flag:
            ids = [i for i in ids if flag in self.current_flags(i)]
        return ids

    def current_flags(self, image_id: str) -> tuple[str, ...]:
        cap = self.captions[image_id]
        return cap.flags if not cap.reviewed else self.flags_of(image_id, cap.record.get("text", ""))

    def counts(self) -> dict:
        """Progress: reviewed / flagged / total reviewable images, and images per current flag."""
        self.refresh()
        caps = self.captions
        by_flag: dict[str, int] = {}
        for image_id in caps:
            for f in self.current_flags(image_id):
                by_flag[f] = by_flag.get(f, 0) + 1
        status: dict[str, int] = {}
        for cap in caps.values():
            status[cap.status] = status.get(cap.status, 0) + 1
        return {
            "total": len(caps),
            "reviewed": sum(c.reviewed for c in caps.values()),
            "flagged": sum(bool(c.flags) for c in caps.values()),
            "images": len(self.rows),
            "status": status,
            "by_flag": dict(sorted(by_flag.items(), key=lambda kv: (-kv[1], kv[0]))),
        }

    # --- one image -------------------------------------------------------------------
    def caption(self, image_id: str) -> Caption:
        self.refresh()
        cap = self.captions.get(image_id)
        if cap is None:
            raise KeyError(image_id)
        return cap


def _stat(path: Path):
    try:
        return path.stat()
    except FileNotFoundError:  # a log removed between listing and stat
        return None
