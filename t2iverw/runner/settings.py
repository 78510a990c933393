"""Settings fingerprints: a dataset never silently mixes records made with different settings.

A worker states the settings that shape its output (model and revision, prompt hash,
sampling, parts file hash, thresholds, grid, input size). Every record stores them
and their fingerprint; a rerun with other settings on a build that holds records of
the old ones stops and says what differs, unless the user picks `redo` (reprocess under
the new settings, the newest record winning) or `keep` (process only images without a
record).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from enum import Enum

from t2iverw.errors import T2IError


class Mode(str, Enum):
    CHECK = "check"  # refuse when records of other settings exist
    REDO = "redo"  # reprocess images whose records came from other settings
    KEEP = "keep"  # leave them as they are; process only images without a record


def fingerprint(settings: dict) -> str:
    """16 hex digits of the SHA-256 of the settings' canonical JSON."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key old -> new' for every setting that differs (nested keys dotted), in key order."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {_short(a)} -> {_short(b)}")
    return out


def _short(value: object) -> str:
    text = "unset" if value is None else json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:12] + "…" + text[-8:]


class SettingsConflict(T2IError):
    """The build holds records of other settings and the user has not chosen --redo or --keep."""


def conflict_error(stage: str, current: dict, others: Counter, settings_of: dict[str, dict]) -> SettingsConflict:
    """One line: how many records came from other settings, what differs, and the two ways on."""
    (fp, n), *rest = others.most_common()
    diff = differences(settings_of.get(fp) or {}, current) or [f"fingerprint {fp} -> {fingerprint(current)}"]
    more = f" (and {sum(c for _, c in rest)} from {len(rest)} other setting(s))" if rest else ""
    return SettingsConflict(
        f"{n} {stage} records of this build were made with other settings{more}: {'; '.join(diff)}. "
        f"Re-run with --redo to reprocess them under the new settings (the newest record wins) or with --keep "
        f"to process only images that have no record"
    )
