"""The writer: the one owner of one record log while it is open.

It holds the log's lock (`filelock`, a kernel lock that dies with its process), so a
second process on the same log is refused with the holder's pid and host instead of
duplicating work or tearing lines. Only the holder repairs a torn tail. It stamps each
record with its provenance (source, settings and their fingerprint, the image hash it
was made from) and its order (`t`, `run`, `seq`; see records.py), appends a batch in one
write, and fsyncs before returning, so a kill loses at most the batch in flight.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from t2iverw.build import BuildDir
from t2iverw.errors import T2IError
from t2iverw.runner.records import LOG_NAME, SUFFIX, check_log_name, greatest_t, stage_dir
from t2iverw.runner.settings import fingerprint
from t2iverw.storage import repair_torn_tail, write_json

SOURCES = ("model", "human", "release", "truth")


class LogBusy(T2IError):
    """Another live process holds the log, or a live run over an overlapping set of images."""


def new_run_id() -> str:
    """Sortable and unique: UTC start time plus random bits (the tie-break of equal timestamps)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


class LogWriter:
    def __init__(self, build: BuildDir, stage: str, log: str, *, source: str, settings: dict,
                 floor: int | None = None):
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        self.build, self.stage, self.log = build, stage, check_log_name(log)
        self.path = stage_dir(build.root, stage) / f"{log}{SUFFIX}"
        self.source = source
        self._last_t = 0
        self.configure(settings)
        self.run = new_run_id()
        self.seq = 0
        self._floor = floor
        self._lock: FileLock | None = None
        self._fh = None

    # --- ownership ------------------------------------------------------------
    def open(self) -> LogWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{self.path}.lock", timeout=0, preserve_lock_file=True)
        try:
            lock.acquire()
        except Timeout:
            raise LogBusy(f"{self.path} is being written by {holder(self.path)}; wait for that process to finish "
                          f"or stop it before starting another on the same {self._what()}") from None
        self._lock = lock
        try:
            self._refuse_overlapping_runs()
            write_json(self._owner_path, {"pid": os.getpid(), "host": socket.gethostname(), "run": self.run,
                                          "since": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            repair_torn_tail(self.path)
            floor = self._floor if self._floor is not None else greatest_t(self.build.root, self.stage)
            self._last_t = max(self._last_t, floor)
            self._fh = self.path.open("ab")
        except BaseException:
            self.close()
            raise
        return self

    @property
    def _owner_path(self) -> Path:
        return self.path.with_name(self.path.name + ".owner")

    def _what(self) -> str:
        return "shard" if self.log == "main" or self.log.startswith("shard-") else "log"

    def _refuse_overlapping_runs(self) -> None:
        """A run over shard i/N and a live run over another split of the images (all, or j/M with M != N)
        would process the same images twice: refuse. Shards of one split run side by side."""
        if not (self.log == "main" or self.log.startswith("shard-")):
            return
        mine = _shard_count(self.log)
        for other in sorted(self.path.parent.glob(f"*{SUFFIX}.lock")):
            name = other.name[: -len(f"{SUFFIX}.lock")]
            if not (LOG_NAME.match(name) and (name == "main" or name.startswith("shard-"))):
                continue
            if name == self.log or _shard_count(name) == mine:
                continue
            probe = FileLock(str(other), timeout=0, preserve_lock_file=True)
            try:
                probe.acquire()
            except Timeout:
                log = other.with_name(f"{name}{SUFFIX}")
                raise LogBusy(f"{log} is being written by {holder(log)}, a run over another split of the "
                              f"images than {self.log}; use the same --shard i/N as the running processes") from None
            probe.release()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._lock is not None:
            self._owner_path.unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def __enter__(self) -> LogWriter:
        return self.open() if self._lock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def configure(self, settings: dict, floor: int = 0) -> None:
        """Set the settings stamped on what follows, and raise the order floor (a distributor learns
        both only after it holds the lock: the settings may come from a server, the floor from the reader)."""
        self.settings, self.fp = settings, fingerprint(settings)
        self._last_t = max(self._last_t, floor)

    # --- appending ------------------------------------------------------------
    def stamp(self, body: dict, shas: Mapping[str, str] | None = None) -> dict:
        """The complete record of one result: its body, then provenance and order.

        `shas` (image_id -> SHA-256) is for a caller that holds the batch's hashes already;
        otherwise they come from the build's images.parquet."""
        if "image_id" not in body or "status" not in body:
            raise ValueError("a record needs image_id and status")
        self.seq += 1
        self._last_t = max(time.time_ns(), self._last_t + 1)
        return {
            **body,
            "source": self.source,
            "settings": self.settings,
            "fp": self.fp,
            "image_sha256": self._image_sha(body["image_id"], shas),
            "run": self.run,
            "seq": self.seq,
            "t": self._last_t,
            "time": datetime.fromtimestamp(self._last_t / 1e9, timezone.utc).isoformat(timespec="milliseconds"),
        }

    def append(self, bodies: Iterable[dict], shas: Mapping[str, str] | None = None) -> list[dict]:
        """Stamp, write and fsync a batch; returns the records as written (`shas`: as for stamp)."""
        if self._fh is None:
            raise RuntimeError("append on a log that is not open")
        records = [self.stamp(b, shas) for b in bodies]
        if records:
            self._fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        return records

    def _image_sha(self, image_id: str, shas: Mapping[str, str] | None = None) -> str:
        try:
            return (self.build.image_shas if shas is None else shas)[image_id]
        except KeyError:
            raise ValueError(f"record for image {image_id!r}, which is not in {self.build.images_path}") from None


def _shard_count(log: str) -> int:
    return 1 if log == "main" else int(log.rsplit("-of-", 1)[1])


def holder(log: Path) -> str:
    """'pid 1234 on host gpu3 (run ..., since ...)' from the owner file, as far as it is known."""
    try:
        owner = json.loads(log.with_name(log.name + ".owner").read_text())
        return f"pid {owner['pid']} on host {owner['host']} (run {owner['run']}, since {owner['since']})"
    except (OSError, ValueError, KeyError):
        return "another process"


@contextmanager
def open_log(build: BuildDir | str | Path, stage: str, log: str, *, source: str, settings: dict,
             floor: int | None = None) -> Iterator[LogWriter]:
    """The writer of `BUILD/<stage>/<log>.jsonl`, locked for this process until the block ends."""
    build = build if isinstance(build, BuildDir) else BuildDir.open(build)
    writer = LogWriter(build, stage, log, source=source, settings=settings, floor=floor)
    with writer.open():
        yield writer
