"""CLI of the part stage: `segment`, `segment-eval`, `show`. Thin: parse, call the library, print."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import click

from t2iverw.constants import GRID, INPUT_SIZE, MIN_COVER, PARTS
from t2iverw.options import runner_options, source_root_option

PREVIEW_DIR = "previews"


def parse_grid(text: str) -> tuple[int, int]:
    """`--grid HxW` as (H, W); a usage error otherwise."""
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected HxW (e.g. 24x24), got {text!r}") from None
    if h < 1 or w < 1:
        raise click.BadParameter(f"grid sides must be positive, got {text!r}")
    return h, w


def segment_options(batch_size: int) -> Callable[[Callable], Callable]:
    """The options that shape segment records: one definition for `t2iverw segment` and pipelines/ray_segment.py."""
    def apply(f: Callable) -> Callable:
        for option in reversed([
            click.option("--model", default="facebook/sam3", show_default=True, help="SAM3 hub id or local directory."),
            click.option("--parts", "parts_file", type=click.Path(path_type=Path),
                         help="Prompt file (default: shipped parts.yaml)."),
            click.option("--device", type=click.Choice(["cuda", "cpu"]), help="Default: cuda when present."),
            click.option("--dtype", type=click.Choice(["bf16", "fp32"]), help="Default: bf16 on cuda, fp32 on cpu."),
            click.option("--batch-size", type=click.IntRange(min=1), default=batch_size, show_default=True,
                         help="Images per forward (halved automatically on an out-of-memory error)."),
            click.option("--grid", default=f"{GRID[0]}x{GRID[1]}", show_default=True, help="Patch grid HxW.",
                         callback=lambda ctx, param, value: parse_grid(value)),
            click.option("--input-size", type=click.IntRange(min=1), default=INPUT_SIZE, show_default=True,
                         help="Side the mask is resized to before it is cut into the grid."),
            click.option("--min-cover", type=click.FloatRange(0, 1, min_open=True), default=MIN_COVER,
                         show_default=True, help="A grid cell is on when the part covers at least this share of it."),
        ]):
            f = option(f)
        return f
    return apply


@click.command()
@click.argument("build", type=click.Path(path_type=Path))
@segment_options(batch_size=4)
@runner_options
@click.option("--preview", type=click.IntRange(min=0), default=0, show_default=True,
              help=f"Write this many overlays to BUILD/{PREVIEW_DIR}/.")
def segment(build: Path, model: str, parts_file, device, dtype, batch_size: int, grid: tuple[int, int], input_size: int,
            min_cover: float, shard, mode, retry_failed: bool, limit, source_root, preview: int) -> None:
    """Six part masks per image with SAM3 (one vision pass per image), stored as COCO RLE + patch grid."""
    from t2iverw.build import BuildDir
    from t2iverw.runner import parse_shard
    from t2iverw.segment.run import SegmentWorker, coverage, segment_build
    from t2iverw.segment.show import render_overlay

    bd = BuildDir.open(build, source_root)
    worker = SegmentWorker(model, parts_file, device=device, dtype=dtype, batch_size=batch_size, grid=grid,
                           input_size=input_size, min_cover=min_cover)
    report = segment_build(bd, worker, shard=parse_shard(shard), mode=mode, retry_failed=retry_failed,
                           limit=limit)
    for line in report.lines("segmented"):
        click.echo(line)
    parts = bd.parts()  # read once, for the table and the previews
    parts_found = coverage(parts)
    if parts_found:
        click.echo(f"{'part':<8} {'found':>6} {'mean area':>9}")
    for part, row in parts_found.items():
        click.echo(f"{part:<8} {row['found']:>6.1%} {row['mean_area']:>9.3f}")
    for image_id in list(parts)[:preview]:
        click.echo(f"preview {render_overlay(bd, image_id, bd.root / PREVIEW_DIR / f'{image_id}.png')}")


@click.command("segment-eval")
@click.argument("build", type=click.Path(path_type=Path))
@click.option("--truth", required=True, type=click.Path(path_type=Path),
              help="Root holding part_masks/<vid>/<imgid>.png ground truth (e.g. a synthetic sample).")
def segment_eval(build: Path, truth: Path) -> None:
    """Per-part IoU and grid-cell precision/recall of the stored masks against ground truth."""
    from t2iverw.build import BuildDir
    from t2iverw.segment.evaluate import evaluate_parts

    result = evaluate_parts(BuildDir.open(build), truth)
    click.echo(f"{result['images']} images with truth")
    click.echo(f"{'part':<8} {'IoU':>6} {'cell P':>6} {'cell R':>6}")
    for part in PARTS:
        row = result["parts"][part]
        click.echo(f"{part:<8} " + " ".join(_pct(row[k]) for k in ("iou", "grid_precision", "grid_recall")))


def _pct(x: float) -> str:
    return f"{'n/a':>6}" if math.isnan(x) else f"{x:>6.3f}"


@click.command()
@click.argument("build", type=click.Path(path_type=Path))
@click.argument("image_id")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="PNG path (default: BUILD/previews/ID.png).")
@source_root_option
def show(build: Path, image_id: str, out, source_root) -> None:
    """Draw IMAGE_ID with its six part masks, the patch grid and its caption into a PNG.

    Before `segment` (or where it failed on this image) the PNG has the image, grid and caption.
    """
    from t2iverw.build import BuildDir
    from t2iverw.segment.show import render_overlay

    bd = BuildDir.open(build, source_root)
    click.echo(render_overlay(bd, image_id, out or bd.root / PREVIEW_DIR / f"{image_id}.png"))
    if image_id not in bd.parts(("grid",)):
        click.echo(f"{image_id} has no part masks yet: run `t2iverw segment {bd.root}` to add them")


commands = [segment, segment_eval, show]
