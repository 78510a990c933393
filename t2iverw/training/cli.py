"""`t2iverw models`, `t2iverw train` and `t2iverw predict`: thin wrappers over the registry, engine.train and predict.predict."""

from __future__ import annotations

import click

CACHE_HELP = ("Load through datasets.load_dataset with this cache directory (default: a local export is read "
              "straight from its Parquet shards, a hub id goes to the default Hugging Face cache).")


CONFIG_HELP = ("A YAML path, the name of a shipped config (`t2iverw models` lists them), or `tiny` for the "
               "model's CPU config; default: the model's full-size NAME.yaml.")


@click.command("models")
def list_models() -> None:
    """List every model the benchmark can train or rank with, and its shipped configs."""
    from t2iverw import models
    from t2iverw.training.config import shipped_configs

    for name in models.MODELS:
        model = models.get(name)
        kind = "" if model.trainable else " (zero-shot)"
        click.echo(f"{name}{kind}: {model.description}")
        click.echo(f"    configs: {', '.join(shipped_configs(name)) or '-'}")


@click.command("train")
@click.option("--dataset", required=True, help="Export directory (`t2iverw export`) or hub id.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory (resumed if it has checkpoints).")
@click.option("--model", help="Registered model (`t2iverw models`); default: the config's `model:`, else pfcvr.")
@click.option("--config", "config_path", help=CONFIG_HELP)
@click.option("--clip", help="CLIP hub id or local directory (overrides the config).")
@click.option("--epochs", type=int, help="Override the number of epochs.")
@click.option("--batch-size", type=int, help="Override the global batch size (image-caption items).")
@click.option("--no-plfa", is_flag=True, help="Switch off part-level alignment (ablation).")
@click.option("--no-bmria", is_flag=True, help="Switch off bidirectional mask recovery (ablation).")
@click.option("--no-aug", is_flag=True, help="Switch off the dark/light/noisy copies (ablation).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any other config override (repeatable).")
@click.option("--cache-dir", type=click.Path(file_okay=False), help=CACHE_HELP)
def train(dataset, out, model, config_path, clip, epochs, batch_size, no_plfa, no_bmria, no_aug, sets, cache_dir) -> None:
    """Train a model (default: the PFCVR reference baseline); run under `accelerate launch` for several processes."""
    from t2iverw.training.config import config_from_options
    from t2iverw.training.engine import train as run_training

    off = [name for name, flag in (("plfa", no_plfa), ("bmria", no_bmria), ("aug", no_aug)) if flag]
    cfg = config_from_options(config_path, model, sets, off, clip=clip, epochs=epochs, batch_size=batch_size)
    run = run_training(cfg, dataset, out, cache_dir)
    from accelerate import PartialState

    if PartialState().is_main_process:  # one line per run, not per process
        click.echo(f"run written to {run}")


@click.command("predict")
@click.option("--run", "run", type=click.Path(file_okay=False), help="Run directory from `t2iverw train`.")
@click.option("--model", help="A zero-shot model to rank with instead of a run (e.g. clip).")
@click.option("--config", "config_path", help="The zero-shot model's config (" + CONFIG_HELP + ")")
@click.option("--clip", help="With --model: CLIP hub id or local directory (overrides the config).")
@click.option("--dataset", required=True, help="Export directory or hub id; its test split is ranked.")
@click.option("--out", "out", type=click.Path(dir_okay=False), help="ranks.json to write (default: RUN/ranks.json).")
@click.option("--scores", type=click.Path(dir_okay=False),
              help="Also write the (queries x gallery) float32 score matrix: .npy, or .npz with the run's meta.")
@click.option("--top-k", type=int, default=100, show_default=True, help="Images kept per query; 0 = the whole gallery.")
@click.option("--full", is_flag=True, help="Rank the whole gallery for every query (same as --top-k 0).")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--device", help="torch device, e.g. cuda:1 or cpu (default: cuda when present).")
@click.option("--num-workers", type=int, default=4, show_default=True, help="Image-decoding data-loader workers.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help=CACHE_HELP)
def predict(run, model, config_path, clip, dataset, out, scores, top_k, full, batch_size, device, num_workers,
            cache_dir) -> None:
    """Rank the test gallery for each test caption.

    Order of ranks and scores (annotations/schema.md, "Evaluation ids"): queries are every
    test caption sorted by query id (caption k > 0 of an image is `<caption_id>#<k>`), the
    gallery is every test image sorted by image_id, whatever the export's row order. ranks.json
    is {"meta": {...}, "ranks": {query_id: [image ids best first]}}.
    """
    from pathlib import Path

    from t2iverw.errors import T2IError
    from t2iverw.training.config import load_config
    from t2iverw.training.predict import predict as run_predict
    from t2iverw.training.predict import run_meta

    if (run is None) == (model is None):
        raise T2IError("give --run RUN (a trained model) or --model NAME (a zero-shot one, e.g. clip), not both")
    if out is None and run is None:
        raise T2IError("--model needs --out (there is no run directory to write ranks.json into)")
    out = out or str(Path(run) / "ranks.json")
    zero_shot = None if model is None else (model, {"clip": clip} if clip else {}, config_path)
    path = run_predict(run, dataset, out, scores, 0 if full else top_k, batch_size, device, num_workers, cache_dir,
                       zero_shot)
    click.echo(f"ranks written to {path}")
    if run is not None:
        meta = run_meta(run, load_config(Path(run) / "config.yaml"))
        if meta["selected_on_test"]:
            click.echo(f"Warning: {meta['warning']}", err=True)


commands = [list_models, train, predict]
