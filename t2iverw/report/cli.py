"""`t2iverw report`: option parsing only; the work is in write.py."""

from __future__ import annotations

from pathlib import Path

import click

from t2iverw.options import source_root_option
from t2iverw.report import GALLERY


@click.command()
@click.argument("source", metavar="BUILD_OR_DATASET", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for index.html, the PNG figures and tables/*.csv.")
@click.option("--truth", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Ground-truth part masks (DIR/part_masks/<vid>/<imgid>.png) for per-part IoU.")
@click.option("--gallery", type=click.IntRange(min=0), default=GALLERY, show_default=True,
              help="Random overlays to draw (0: none; the only images a report decodes).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the gallery's sample.")
@source_root_option
def report(source: Path, out: Path, truth, gallery: int, seed: int, source_root) -> None:
    """Write OUT/index.html with plots of a build directory or an export: splits, captions, parts, provenance."""
    from t2iverw.report.write import write_report

    for line in write_report(source, out, truth=truth, gallery=gallery, seed=seed, source_root=source_root).lines():
        click.echo(line)


commands = [report]
