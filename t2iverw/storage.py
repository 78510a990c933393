"""Crash-safe file writing shared by every stage.

Two rules keep a killed stage harmless: whole files are written to a temporary name
and renamed into place, and logs are append-only JSONL whose unterminated last line
(the one a kill cut short) is ignored on read and cut only by the log's writer.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, Timeout

from t2iverw.errors import T2IError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a build is shared like any file `open` creates
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_umask() -> int:
    """The process umask, read once at import: reading it means setting it, which would race with other threads."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Records of a JSONL log, streamed.

    Only newline-terminated lines are records: an unterminated last line is a write in
    progress or one cut short by a kill, and is skipped (never modified: only the log's
    writer may repair it). A complete line that is not JSON is damage, reported with its
    file and line number rather than silently dropped.
    """
    return (rec for _, rec in read_jsonl_at(path))


def read_jsonl_at(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(byte offset of its line, record) of each record of a JSONL log, as read_jsonl reads them:
    an offset lets a reader come back for one record without holding it."""
    path = Path(path)
    if not path.exists():
        return
    offset = 0
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):
                return
            at, offset = offset, offset + len(line)
            if not line.strip():
                continue
            try:
                yield at, json.loads(line)
            except json.JSONDecodeError as exc:
                raise T2IError(f"{path}:{lineno} is not a JSON record ({exc.msg}); the log is damaged: move that "
                               "line out of the file (or restore the file) and re-run") from None


def repair_torn_tail(path: Path) -> int:
    """Cut an unterminated last line (a write cut short by a kill); returns the bytes removed.

    Only the log's single writer may call this: on a live log the tail may be a record
    another process is still writing.
    """
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("r+b") as fh:
        keep = size
        block = 1 << 16
        while keep > 0:  # scan backwards for the last newline without reading the whole log
            start = max(0, keep - block)
            fh.seek(start)
            chunk = fh.read(keep - start)
            if keep == size and chunk.endswith(b"\n"):
                return 0
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            keep = start
        fh.truncate(keep)
    return size - keep


class JsonlWriter:
    """Append-only JSONL log, flushed and fsynced per batch so a kill loses at most the batch in flight.

    For single-writer files (index progress, training metrics). Build record logs, which
    many processes share, go through `t2iverw.runner` instead, which adds the lock.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(self.path)  # a kill mid-write leaves a partial last line: the next append starts clean
        self._fh: IO[str] = self.path.open("a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.write_many([record])

    def write_many(self, records: Iterable[dict]) -> None:
        for rec in records:
            self._fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def staged_dir(out: str | Path, what: str) -> Iterator[Path]:
    """A directory built beside `out` and swapped into place only when the block succeeds.

    A kill leaves `out` as it was (the old version or nothing). One writer of `out` at a
    time (a lock beside it); that writer first clears what killed runs left behind.
    """
    out = Path(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    with exclusive(out.parent / f".{out.name}.lock", f"another {what} is writing {out}"):
        for stale in [*out.parent.glob(f".{out.name}.partial-*"), *out.parent.glob(f".{out.name}.old-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        try:
            tmp.mkdir()
            yield tmp
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            if out.exists():
                os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def check_replaceable(out: str | Path, build: str | Path, ours: str, what: str) -> None:
    """Refuse an --out that `staged_dir` must not replace: the build itself, a folder inside it or holding
    it, or a non-empty directory that is not an earlier output of this command (it has no marker file `ours`)."""
    out, build = Path(out).resolve(), Path(build).resolve()
    if out == build:
        raise T2IError(f"--out {out} is the build itself; write the {what} beside the build")
    if build in out.parents:
        raise T2IError(f"--out {out} is inside the build {build}, whose folders belong to its stages; "
                       f"write the {what} beside the build")
    if out in build.parents:
        raise T2IError(f"--out {out} holds the build {build}; replacing it would delete the build")
    if out.exists() and not out.is_dir():
        raise T2IError(f"--out {out} is a file, not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    names = sorted(p.name for p in out.iterdir())
    if not (out / ours).is_file():
        raise T2IError(f"--out {out} holds files an earlier {what} did not write (no {ours}; first: {names[0]!r}); "
                       "nothing was changed: choose an empty or new --out")
    try:
        marker = json.loads((out / ours).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        marker = {}
    written = marker.get("top", names) if isinstance(marker, dict) else names
    foreign = [n for n in names if n not in written]
    if foreign:
        raise T2IError(f"--out {out} is an earlier {what}, but {foreign[0]!r} was put there since and would be "
                       "deleted with it; nothing was changed: move it out or choose another --out")


def write_marker(folder: Path, name: str, info: dict) -> None:
    """The file that makes `folder` an output `check_replaceable` may replace: the settings that produced
    it, and every top-level name it wrote (so that a file a user puts there later is never deleted)."""
    top = sorted({p.name for p in Path(folder).iterdir()} | {name})
    write_json(Path(folder) / name, {**info, "top": top})


@contextmanager
def exclusive(lock_path: str | Path, busy: str) -> Iterator[None]:
    """Hold `lock_path` (a kernel lock: a killed holder releases it) for the block; T2IError(`busy`) if held."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), timeout=0, preserve_lock_file=True)
    try:
        lock.acquire()
    except Timeout:
        raise T2IError(f"{busy}; wait for it to finish") from None
    try:
        yield
    finally:
        lock.release()
