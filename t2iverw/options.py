"""Click options shared by every stage that runs on the stage runner (caption, segment) or reads images.

One definition, so `--shard`, `--redo`/`--keep`, `--retry-failed`, `--limit` and
`--source-root` mean the same on every command.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import click

from t2iverw.build import SOURCE_ROOT_ENV


def source_root_option(f: Callable) -> Callable:
    return click.option(
        "--source-root", type=click.Path(file_okay=False, path_type=Path),
        help=f"Where the source images are mounted on this machine, if not where `index` saw them "
             f"(also ${SOURCE_ROOT_ENV}).")(f)


def runner_options(f: Callable) -> Callable:
    """--shard, --redo/--keep (passed on as `mode`: 'redo', 'keep' or 'check'), --retry-failed, --limit, --source-root."""

    @functools.wraps(f)
    def command(*args, redo: bool, keep: bool, **kwargs):
        if redo and keep:
            raise click.UsageError("--redo and --keep exclude each other: choose one")
        return f(*args, mode="redo" if redo else "keep" if keep else "check", **kwargs)

    for option in reversed([
        click.option("--shard", help="Process shard i of N (i/N): a stable, disjoint slice of the images; run one "
                                     "process per shard, on any machines that see the build."),
        click.option("--redo", is_flag=True,
                     help="Records of other settings exist: reprocess those images under these settings."),
        click.option("--keep", is_flag=True,
                     help="Records of other settings exist: keep them; process only images without a record."),
        click.option("--retry-failed", is_flag=True, help="Also retry images whose latest record failed."),
        click.option("--limit", type=click.IntRange(min=1), help="Process at most this many pending images."),
        source_root_option,
    ]):
        command = option(command)
    return command
