"""`t2iverw leaderboard`: option parsing only; the work is in write.py."""

from __future__ import annotations

from pathlib import Path

import click

from t2iverw.errors import T2IError


@click.command()
@click.argument("runs", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--dataset", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The export the runs' ranks.json are scored on (needed with RUNs).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for LEADERBOARD.md, leaderboard.html and leaderboard.png.")
@click.option("--ci", type=float, default=95.0, show_default=True, help="Level of the bootstrap intervals.")
@click.option("--unit", type=click.Choice(["identity", "query"]), default="identity", show_default=True,
              help="Resampling unit of the intervals and tests (see `t2iverw compare`).")
@click.option("--resamples", type=int, default=10_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def leaderboard(runs: tuple[Path, ...], dataset: Path | None, out: Path, ci: float, unit: str, resamples: int,
                seed: int) -> None:
    """Write OUT/LEADERBOARD.md and OUT/leaderboard.html: one row per RUN, then the paper's published rows.

    A RUN is a run directory with summary.json and ranks.json (`t2iverw predict`), scored
    on the test split of --dataset with bootstrap intervals; which measured rows differ
    significantly comes from `t2iverw compare`'s Holm-corrected paired tests. With no
    RUN it writes the published rows (paper Tables III and IV) alone.
    """
    from t2iverw.leaderboard.write import write_leaderboard

    if runs and dataset is None:
        raise T2IError("measured runs need the dataset their ranks.json are scored on: give --dataset DS")
    summary = write_leaderboard(list(runs), dataset, out, ci=ci, unit=unit, resamples=resamples, seed=seed)
    for line in summary:
        click.echo(line)


commands = [leaderboard]
