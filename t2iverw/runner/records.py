"""Record logs: where a stage's records live, how they are named, and which record is the latest.

A stage's records live in `BUILD/<stage>/<log>.jsonl`, one log per writer: `main` for an
unsharded run, `shard-0000i-of-0000N` for `--shard i/N`, `import` for `import-release`,
`review-<name>` for the review app. Only these names are read, so a file a user puts
beside them (`old.jsonl`, a renamed log) is never mixed in.

Which record of an image is the latest is decided by the records alone: every record
carries `t` (a timestamp in ns that each writer keeps strictly increasing and above every
record it has read), `run` (the writing run's id) and `seq` (its sequence in the run),
and the greatest `(t, run, seq)` wins whatever log holds it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from t2iverw.storage import read_jsonl

STAGES = ("captions", "parts", "release")
LOG_NAME = re.compile(r"^(?:main|shard-\d{5}-of-\d{5}|import|review-[a-z0-9][a-z0-9_.-]{0,63})$")
SUFFIX = ".jsonl"


def stage_dir(root: Path, stage: str) -> Path:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    return root / stage


def shard_log(shard: tuple[int, int] | None) -> str:
    """The log name of a run over shard (i, N); None (or 1 shard) is the whole build."""
    if shard is None or shard[1] == 1:
        return "main"
    return f"shard-{shard[0]:05d}-of-{shard[1]:05d}"


def check_log_name(log: str) -> str:
    if not LOG_NAME.match(log):
        raise ValueError(f"{log!r} is not a record log name (main, shard-0000i-of-0000N, import, review-<name>)")
    return log


def log_paths(root: Path, stage: str) -> list[Path]:
    """The stage's logs, by the exact naming rule (never a stray file beside them)."""
    folder = stage_dir(root, stage)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"*{SUFFIX}") if LOG_NAME.match(p.name[: -len(SUFFIX)]))


def order_key(record: dict) -> tuple[int, str, int]:
    return record["t"], record["run"], record["seq"]


def records(root: Path, stage: str) -> Iterator[dict]:
    """Every record of every log of the stage (in no particular order)."""
    for path in log_paths(root, stage):
        yield from read_jsonl(path)


def latest(root: Path, stage: str, fields: tuple[str, ...] | None = None) -> dict[str, dict]:
    """image_id -> the latest record of the stage, of any status.

    With `fields`, each record keeps only those keys (and its order key and status) as it is
    read, and equal `settings` dicts are one shared object: what a reader of 400k records
    needs, without the bulk of every record held at once.
    """
    keep = None if fields is None else {*fields, "image_id", "status", "t", "run", "seq"}
    shared: dict[str, object] = {}
    out: dict[str, dict] = {}
    for rec in records(root, stage):
        if keep is not None:
            rec = {k: v for k, v in rec.items() if k in keep}
            if "settings" in rec:
                rec["settings"] = shared.setdefault(json.dumps(rec["settings"], sort_keys=True), rec["settings"])
            for k in ("run", "source", "fp", "status"):
                if isinstance(rec.get(k), str):
                    rec[k] = sys.intern(rec[k])
        old = out.get(rec["image_id"])
        if old is None or order_key(rec) > order_key(old):
            out[rec["image_id"]] = rec
    return out


def greatest_t(root: Path, stage: str) -> int:
    """The greatest record timestamp of the stage (0 when there is none): a new record must stamp above it."""
    return max((rec["t"] for rec in records(root, stage)), default=0)
