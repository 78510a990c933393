"""`t2iverw demo`: the whole pipeline on a synthetic sample, end to end on a laptop CPU.

It runs the same library functions as the individual commands, in build order, and
prints what each step made, so a newcomer sees every stage and its output once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from t2iverw.build import BuildDir
from t2iverw.constants import DEFAULT_SEED, GRID, INPUT_SIZE, MIN_COVER
from t2iverw.synth import read_truth


def run_demo(out: Path, ids: int = 24, seed: int = DEFAULT_SEED, echo: Callable[[str], None] = click.echo) -> dict:
    """Build, export, load and evaluate a synthetic T2I-VeRW; returns the paths it made."""
    import datasets

    from t2iverw.leaderboard.write import write_leaderboard
    from t2iverw.search.index import open_searcher
    from t2iverw.training.config import TINY_CONFIG, load_config, resolve_config
    from t2iverw.training.engine import train
    from t2iverw.training.predict import predict
    from t2iverw.caption import run_captions
    from t2iverw.evaluation import evaluate_predictions
    from t2iverw.evaluation.baselines import colour_word_scores, random_scores
    from t2iverw.evaluation.report import format_table
    from t2iverw.export import export_dataset
    from t2iverw.index import build_index
    from t2iverw.report.write import write_report
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

    step("caption", "template captions from the metadata (the real stage runs Qwen3-VL on vLLM)")
    for line in run_captions(build, backend="template", progress=False).lines():
        echo(f"  {line}")

    step("segment", "the sample's true part masks stand in for SAM3 (weights need the Hugging Face hub)")
    n = write_truth_parts(BuildDir.open(build))
    echo(f"  {n} part records: COCO RLE masks + 24x24 patch grids; real data: `t2iverw segment BUILD`")

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

    step("eval", "no-learning text-to-image baselines on the test split")
    for name, scores in (("chance", random_scores(dataset, seed)), ("colour words vs pixels", colour_word_scores(dataset))):
        echo(f"  {name}:")
        echo(_indent(format_table(evaluate_predictions(dataset, scores=scores).metrics), "    "))

    step("train", "tiny PFCVR and IRRA (random CLIP backbones) from scratch on CPU; the real ones are ViT-B/16")
    run, irra = out / "run", out / "run-irra"
    train(load_config(TINY_CONFIG), dataset, run)
    train(load_config(resolve_config("tiny", "irra")), dataset, irra)
    echo(f"  run directories {run}, {irra} (checkpoints, metrics.jsonl, curve.png, summary.json)")

    step("predict + eval", "rank the test gallery for every test caption, then score the ranking")
    ranks = predict(run, dataset, run / "ranks.json", top_k=0)
    predict(irra, dataset, irra / "ranks.json", top_k=0)
    echo(_indent(format_table(evaluate_predictions(dataset, ranks=ranks).metrics), "    "))

    step("leaderboard", "both runs with intervals and paired tests, beside the paper's published rows")
    board = out / "leaderboard"
    for line in write_leaderboard([run, irra], dataset, board, resamples=1000):
        echo(f"  {line}")

    query = "a white SUV"
    step("search", f"the test images that best match {query!r}, with the tiny PFCVR")
    for hit in open_searcher(run, dataset).search(query, top=3):
        echo(f"  {hit.score:.3f}  {hit.image_id}  (vehicle {hit.vehicle_id})")

    step("report", "splits, captions, parts and provenance as one HTML page")
    report = write_report(build, out / "report", truth=source)
    echo(f"  {report.index}")

    echo("")
    echo(f"done. The dataset is in {dataset}; load it with:")
    echo(f"  import datasets; ds = datasets.load_dataset({str(dataset)!r})")
    echo(f"Review and correct its captions in the browser: t2iverw review {build}")
    return {"source": source, "build": build, "dataset": dataset, "run": run, "ranks": ranks, "report": report.index,
            "leaderboard": board / "LEADERBOARD.md"}


def write_truth_parts(build: BuildDir) -> int:
    """Part records from the synthetic sample's ground-truth masks, in the segment stage's format."""
    from t2iverw.runner import open_log
    from t2iverw.segment.masks import part_record
    from t2iverw.segment.model import PartMasks

    rows = build.images(["image_id", "vehicle_id"]).to_pylist()
    settings = {"model": "synthetic ground truth", "grid": list(GRID), "input_size": INPUT_SIZE, "min_cover": MIN_COVER}
    with open_log(build, "parts", "main", source="truth", settings=settings) as log:
        for row in rows:
            truth = read_truth(build.source_root, f"{row['vehicle_id']}/{row['image_id']}")
            found = [int(m.any()) for m in truth]
            masks = PartMasks(masks=truth, scores=[float(f) for f in found], instances=found)
            log.append([part_record(row["image_id"], masks, grid=GRID, input_size=INPUT_SIZE, min_cover=MIN_COVER)])
    return len(rows)


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _stepper(echo: Callable[[str], None]) -> Callable[[str, str], None]:
    counter = iter(range(1, 100))

    def step(name: str, what: str) -> None:
        echo(click.style(f"[{next(counter)}] {name}", bold=True) + f": {what}")

    return step
