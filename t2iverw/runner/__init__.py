"""The stage runner: every record that enters a build goes through here.

In the img2dataset manner, a stage is split four ways (annotations/schema.md has the
file formats):

- the **reader** (`reader.py`) decides which images are pending for *these* settings and
  *this* shard, from the index and the stage's own records only;
- a **worker** (`worker.py`; SAM3 in t2iverw/segment, a VLM client in t2iverw/caption, a
  person in the review app) turns a batch into one record per image, ok or failed with a
  reason, and knows nothing of files, shards or locks;
- the **writer** (`writer.py`) is the one owner of a log: lock, torn-tail repair,
  provenance, order, fsync;
- a **distributor** runs them: in-process or `--shard i/N` (`distributor.py`), or Ray
  Data across machines (`ray_data.py`).

Records of one stage from every log are merged by their own order (`records.py`), and
their settings fingerprints (`settings.py`) keep a dataset from silently mixing settings.
Writers outside the model stages (import-release, the review app) use `open_log`.
"""

from t2iverw.runner.distributor import RunReport, run_stage
from t2iverw.runner.reader import Item, Pending, parse_shard, pending, shard_of
from t2iverw.runner.records import STAGES, latest, shard_log
from t2iverw.runner.settings import Mode, SettingsConflict, fingerprint
from t2iverw.runner.worker import ItemFailed, Worker
from t2iverw.runner.writer import LogBusy, LogWriter, open_log

__all__ = [
    "Item", "ItemFailed", "LogBusy", "LogWriter", "Mode", "Pending", "RunReport", "STAGES", "SettingsConflict",
    "Worker", "fingerprint", "latest", "open_log", "parse_shard", "pending", "run_stage", "shard_log", "shard_of",
]
