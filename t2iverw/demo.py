"""`t2iverw demo`: the whole pipeline on a synthetic sample, end to end on a laptop CPU.

It runs the same library functions as the individual commands, in build order, and
prints what each step made, so a newcomer sees every stage and its output once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from t2iverw.constants import DEFAULT_SEED


def run_demo(out: Path, ids: int = 24, seed: int = DEFAULT_SEED, echo: Callable[[str], None] = click.echo) -> dict:
    """Build, export, load and evaluate a synthetic T2I-VeRW; returns the paths it made."""
    import datasets

    from t2iverw.export import export_dataset
    from t2iverw.index import build_index
    from t2iverw.split import make_split
    from t2iverw.synth import write_sample

    source, build, dataset = out / "veri-wild-synth", out / "build", out / "dataset"
    step = _stepper(echo)

    step("synth", f"drawing {ids} vehicles")
    s = write_sample(source, ids=ids, seed=seed)
    echo(f"  {s.images} images of {s.identities} identities in {source}")

    step("index", "reading the VERI-Wild layout")
    for line in build_index(source, build).lines():
        echo(f"  {line}")

    step("split", "identity-disjoint 7:3")
    counts = make_split(build, seed=seed)["counts"]
    for name in ("train", "test"):
        echo(f"  {name}: {counts[name]['ids']} identities, {counts[name]['images']} images")

    step("export", "Parquet shards + dataset card")
    for line in export_dataset(build, dataset).lines():
        echo(f"  {line}")

    step("load", "datasets.load_dataset")
    ds = datasets.load_dataset(str(dataset))
    echo("  " + ", ".join(f"{k}: {v.num_rows} rows" for k, v in ds.items()))
    echo(f"  columns: {', '.join(ds['train'].column_names)}")

    echo("")
    echo(f"done. The dataset is in {dataset}; load it with:")
    echo(f"  import datasets; ds = datasets.load_dataset({str(dataset)!r})")
    return {"source": source, "build": build, "dataset": dataset}


def _stepper(echo: Callable[[str], None]) -> Callable[[str, str], None]:
    counter = iter(range(1, 100))

    def step(name: str, what: str) -> None:
        echo(click.style(f"[{next(counter)}] {name}", bold=True) + f": {what}")

    return step
