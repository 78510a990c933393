"""`t2iverw import-release`: the official T2I-VeRW / T2I-VeRI release into a build directory."""

from __future__ import annotations

from pathlib import Path

import click

from t2iverw.release.sources import FORMAT_NAMES


@click.command("import-release")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Build directory.")
@click.option("--format", "fmt", type=click.Choice(FORMAT_NAMES), default="auto", show_default=True,
              help="The annotation format: the T2I-VeRW/T2I-VeRI release, or a person-search set in IRRA's layout "
                   "(reid_raw.json, ICFG-PEDES.json, data_captions.json beside imgs/); auto: the file ROOT holds.")
@click.option("--veri-wild", "veri_wild", type=click.Path(path_type=Path),
              help="A VERI-Wild root: fill camera, time, model, type and colour from its vehicle_info.txt.")
@click.option("--encoding", default="utf-8", show_default=True, help="Encoding of VERI-Wild's vehicle_info.txt.")
@click.option("--workers", type=click.IntRange(min=1), default=8, show_default=True, help="Decoding threads.")
def import_release_command(root: Path, out: Path, fmt: str, veri_wild: Path | None, encoding: str,
                           workers: int) -> None:
    """Read a T2I-VeRW (T2I_VeRi_new/) or T2I-VeRI (T2I_VeRi/) release ROOT into the build OUT,
    or a CUHK-PEDES, ICFG-PEDES or RSTPReid root (each model's home benchmark; no part files).

    Every later command (export, eval, train, show, caption-qa) then works on OUT; images
    stay in ROOT. Records the authors' code could not use go to OUT/rejected.jsonl.
    """
    from t2iverw.release.importer import import_release

    summary = import_release(root, out, fmt=fmt, veri_wild=veri_wild, encoding=encoding, workers=workers)
    for line in summary.lines():
        click.echo(line)


commands = [import_release_command]
