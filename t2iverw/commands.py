"""CLI commands of the dataset stages (synth, index, split, export, demo).

Each command parses its options and calls the library function of the module with
the command's name; tests call those functions directly.
"""

from __future__ import annotations

from pathlib import Path

import click

from t2iverw.constants import DEFAULT_SEED, TEST_RATIO


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
def synth(out: Path, ids: int, per_id: str, seed: int) -> None:
    """Write a synthetic VERI-Wild-shaped sample (images, vehicle_info.txt, true part masks) to OUT."""
    from t2iverw.synth import write_sample

    lo, hi = _range(per_id)
    if not 1 <= lo <= hi:
        raise click.BadParameter(f"need 1 <= MIN <= MAX, got {per_id}", param_hint="--per-id")
    summary = write_sample(out, ids=ids, per_id=(lo, hi), seed=seed)
    click.echo(f"wrote {summary.images} images of {summary.identities} identities to {out}")


commands = [synth]
