"""`t2iverw eval`: score a ranks.json or a score matrix on the test split."""

from __future__ import annotations

import json
from pathlib import Path

import click

from t2iverw.errors import T2IError

_file = click.Path(exists=True, dir_okay=False, path_type=Path)


_dir = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command("eval")
@click.argument("dataset", required=False, type=_dir)
@click.option("--dataset", "dataset_option", type=_dir, help="The dataset, as an option (same as DATASET).")
@click.option("--pred", type=_file,
              help="ranks.json: {query_id: [gallery ids, best first]}, or a list of rankings in --query-ids order; "
                   "lists may be top-K.")
@click.option("--scores", type=_file, help="queries x gallery score matrix (.npy or .npz), higher = more similar.")
@click.option("--baseline", type=click.Choice(["random", "colour-words"]),
              help="Evaluate a no-learning baseline (chance, or caption colour words vs. image pixels) instead.")
@click.option("--direction", type=click.Choice(["t2i", "i2t"]), default="t2i", show_default=True,
              help="t2i: caption queries, image gallery; i2t: image queries, caption gallery.")
@click.option("--query-ids", type=_file,
              help="Row order of --scores, or the query of each ranking of a ranks.json list; one id per line "
                   "(default: ids sorted).")
@click.option("--gallery-ids", type=_file,
              help="Column order of --scores, or the gallery that integer entries of a ranks.json index; one id "
                   "per line (default: ids sorted).")
@click.option("--print-order", is_flag=True, help="Print the default query and gallery order as JSON and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--per-query", type=click.Path(dir_okay=False, path_type=Path),
              help="Write each query's first-positive rank, AP and INP to this CSV.")
@click.option("--ci", type=float, help="Add bootstrap confidence intervals at this level, e.g. 95.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap and the random baseline.")
def eval_command(dataset: Path | None, dataset_option: Path | None, pred: Path | None, scores: Path | None, baseline: str | None, direction: str, query_ids: Path | None,
                 gallery_ids: Path | None, print_order: bool, as_json: bool, per_query: Path | None,
                 ci: float | None, seed: int) -> None:
    """Evaluate retrieval on the test split of DATASET (an export or a build directory).

    Every test caption queries every test image; an image is correct when its vehicle
    id equals the caption's. Reports Rank-1/5/10, mAP and mINP in percent. Score ties
    are broken by gallery order (ids sorted, or --gallery-ids).
    """
    from t2iverw.evaluation.inputs import ground_truth
    from t2iverw.evaluation.judge import evaluate_predictions
    from t2iverw.evaluation.report import format_table, write_per_query

    dataset = _one_dataset(dataset, dataset_option, pred, scores)
    if print_order:
        truth = ground_truth(dataset, direction)
        click.echo(json.dumps({"direction": direction, "queries": truth.query_ids, "gallery": truth.gallery_ids}))
        return
    if baseline is not None:
        if pred is not None or scores is not None or direction != "t2i":
            raise T2IError("--baseline evaluates its own t2i scores; drop --pred/--scores/--direction")
        from t2iverw.evaluation.baselines import colour_word_scores, random_scores

        scores = colour_word_scores(dataset) if baseline == "colour-words" else random_scores(dataset, seed)
    if pred is None and scores is None:
        raise T2IError("nothing to evaluate: give --pred ranks.json, --scores scores.npy or --baseline")
    result = evaluate_predictions(dataset, ranks=pred, scores=scores, direction=direction, query_ids=query_ids,
                                  gallery_ids=gallery_ids, ci=ci, seed=seed, progress=not as_json)
    if result.selected_on_test:
        click.echo("Warning: this model was selected on the test split (its prediction file says "
                   "selected_on_test), so these numbers are optimistic, not a held-out result", err=True)
    if per_query is not None:
        write_per_query(per_query, result.truth.query_ids, result.per_query)
    click.echo(json.dumps(result.metrics) if as_json else format_table(result.metrics))


def _one_dataset(positional: Path | None, option: Path | None, pred: Path | None, scores: Path | None) -> Path:
    """The dataset, given either way (README and older scripts use --dataset); never two different ones."""
    if positional is not None and option is not None and positional.resolve() != option.resolve():
        raise T2IError(f"two datasets given: {positional} and --dataset {option}; give one")
    dataset = positional or option
    if dataset is None:
        what = f"--pred {pred}" if pred else f"--scores {scores}" if scores else "the evaluation"
        raise T2IError(f"{what} needs the dataset it is scored on: give DATASET or --dataset DIR "
                       "(an export or a build directory)")
    return dataset


@click.command("compare")
@click.argument("dataset", type=_dir)
@click.argument("systems", nargs=-1, required=True)
@click.option("--ci", type=float, default=95.0, show_default=True, help="Level of the bootstrap intervals.")
@click.option("--unit", type=click.Choice(["identity", "query"]), default="identity", show_default=True,
              help="What a resample draws: vehicle identities (all their captions together) or single queries.")
@click.option("--resamples", type=int, default=10_000, show_default=True,
              help="Bootstrap resamples and random sign patterns of the paired test.")
@click.option("--direction", type=click.Choice(["t2i", "i2t"]), default="t2i", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {systems, pairs, ...} instead of tables.")
def compare_command(dataset: Path, systems: tuple[str, ...], ci: float, unit: str, resamples: int, direction: str,
                    seed: int, as_json: bool) -> None:
    """Compare SYSTEMs on the test split of DATASET: does one really beat another?

    A SYSTEM is a run directory (its ranks.json, else scores.npz/.npy), a ranks.json or a
    .npy/.npz score matrix, optionally named NAME=PATH. Prints R1/R5/R10/mAP/mINP of each
    with percentile-bootstrap intervals, then, for every pair, the difference in R1 and mAP
    with a paired randomisation (sign-flip) test: under "A and B are exchangeable" each
    unit's per-query first-hit indicators and APs are swapped between A and B; p is the
    share of sign patterns (all of them when 2**units <= --resamples, an exact p; else
    random ones) whose |mean difference| reaches the observed one. p_holm is
    Holm-corrected across the pairs of each metric. Units are vehicle identities by
    default, since captions of one vehicle are not independent.
    """
    from t2iverw.evaluation.compare import compare, format_comparison

    result = compare(dataset, list(systems), ci=ci, resamples=resamples, unit=unit, seed=seed,
                     direction=direction, progress=not as_json)
    click.echo(json.dumps(result) if as_json else format_comparison(result))


commands = [eval_command, compare_command]
