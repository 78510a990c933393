"""CLI commands of the dataset stages (synth, index, split, export, demo).

Each command parses its options and calls the library function of the module with
the command's name; tests call those functions directly.
"""

from __future__ import annotations

from pathlib import Path

import click

from t2iverw.constants import DEFAULT_SEED, TEST_RATIO
from t2iverw.options import source_root_option


def _range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split(":"))
    except ValueError:
        raise click.BadParameter(f"expected MIN:MAX, got {text!r}") from None
    return lo, hi


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--ids", type=click.IntRange(min=1), default=40, show_default=True, help="Number of vehicle identities.")
@click.option("--per-id", default="3:8", show_default=True, help="Images per identity, MIN:MAX.")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True)
@click.option("--layout", type=click.Choice(["veri-wild", "veri776"]), default="veri-wild", show_default=True,
              help="Write VERI-Wild's layout, or VeRi-776's (gb2312 label XML, name lists, colour/type lists).")
def synth(out: Path, ids: int, per_id: str, seed: int, layout: str) -> None:
    """Write a synthetic VERI-Wild- or VeRi-776-shaped sample (images, metadata, true part masks) to OUT."""
    from t2iverw.synth import write_sample, write_veri776_sample

    lo, hi = _range(per_id)
    if not 1 <= lo <= hi:
        raise click.BadParameter(f"need 1 <= MIN <= MAX, got {per_id}", param_hint="--per-id")
    write = write_veri776_sample if layout == "veri776" else write_sample
    summary = write(out, ids=ids, per_id=(lo, hi), seed=seed)
    click.echo(f"wrote {summary.images} images of {summary.identities} identities to {out}")


@click.command()
@click.argument("source_root", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Build directory.")
@click.option("--limit-ids", type=click.IntRange(min=1), help="Keep a reproducible subset of this many identities.")
@click.option("--max-per-id", type=click.IntRange(min=1), help="Keep at most this many images per identity.")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True, help="Seed of the subset selection.")
@click.option("--list", "list_file", type=click.Path(path_type=Path), help="Index exactly the vid/imgid lines of FILE.")
@click.option("--workers", type=click.IntRange(min=1), default=8, show_default=True, help="Decoding threads.")
@click.option("--source", type=click.Choice(["auto", "veri-wild", "veri776"]), default="auto", show_default=True,
              help="Source layout; auto detects VERI-Wild (train_test_split/vehicle_info.txt) or VeRi-776.")
@click.option("--encoding", default="utf-8", show_default=True,
              help="Encoding of VERI-Wild's vehicle_info.txt; lines that do not decode are rejected.")
def index(source_root: Path, out: Path, limit_ids, max_per_id, seed: int, list_file, workers: int, source: str,
          encoding: str) -> None:
    """Read a VERI-Wild or VeRi-776 root (real or synthetic) into OUT/images.parquet; bad inputs go to
    OUT/rejected.jsonl."""
    from t2iverw.index import build_index

    summary = build_index(source_root, out, limit_ids=limit_ids, max_per_id=max_per_id, seed=seed,
                          list_file=list_file, workers=workers, source=source, encoding=encoding)
    for line in summary.lines():
        click.echo(line)


@click.command()
@click.argument("build", type=click.Path(path_type=Path))
@click.option("--test-ratio", type=float, default=TEST_RATIO, show_default=True, help="Share of identities in test.")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True)
@click.option("--from", "from_file", type=click.Path(path_type=Path),
              help="Reuse a published split: a split.json, a release's annotation JSON, or a list of test vid or "
                   "vid/imgid lines (VERI-Wild's test_3000.txt ...). The build may hold a subset of it.")
def split(build: Path, test_ratio: float, seed: int, from_file) -> None:
    """Identity-disjoint train/test split of BUILD, written to BUILD/split.json."""
    from t2iverw.split import make_split, published_lines

    result = make_split(build, test_ratio=test_ratio, seed=seed, from_file=from_file)
    for line in published_lines(result):
        click.echo(line)
    for name in ("train", "test"):
        c = result["counts"][name]
        click.echo(f"{name}: {c['ids']} identities, {c['images']} images")


@click.command()
@click.argument("build", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Dataset directory.")
@click.option("--no-images", is_flag=True, help="Annotations only (VERI-Wild's licence): no image bytes.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "pfcvr"]), default="parquet", show_default=True,
              help="parquet: for datasets.load_dataset; pfcvr: the authors' release layout, for their code.")
@click.option("--augmented-copies", is_flag=True,
              help="Add the dark/light/noisy copies PFCVR's augmentation uses (the release's, else made).")
@click.option("--dataset-name", type=click.Choice(["T2I_VeRi_new", "T2I_VeRi"]),
              help="pfcvr: which annotation file name to write (default: the imported release's, else T2I_VeRi_new).")
@source_root_option
def export(build: Path, out: Path, no_images: bool, fmt: str, augmented_copies: bool, dataset_name, source_root) -> None:
    """Write BUILD as Parquet shards + dataset card that datasets.load_dataset(OUT) reads, or (--format pfcvr)
    as the authors' release layout."""
    from t2iverw.build import BuildDir

    bd = BuildDir.open(build, source_root)
    if fmt == "pfcvr":
        from t2iverw.release.pfcvr import export_pfcvr

        if no_images:
            raise click.BadParameter("the authors' layout holds the images; drop --no-images", param_hint="--format")
        summary = export_pfcvr(bd, out, dataset=dataset_name, augmented_copies=augmented_copies)
        for line in summary.lines():
            click.echo(line)
        return
    from t2iverw.export import export_dataset

    summary = export_dataset(bd, out, include_images=not no_images, augmented_copies=augmented_copies)
    for line in summary.lines():
        click.echo(line)
    click.echo(f"load it with: datasets.load_dataset({str(out)!r})")


@click.command()
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("t2iverw-demo"),
              show_default=True, help="Where the sample, build and dataset go.")
@click.option("--ids", type=click.IntRange(min=4), default=24, show_default=True, help="Synthetic identities.")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True)
def demo(out: Path, ids: int, seed: int) -> None:
    """Run the whole pipeline on a synthetic sample, end to end, on CPU."""
    from t2iverw.demo import run_demo

    run_demo(out, ids=ids, seed=seed)


commands = [synth, index, split, export, demo]
