"""`t2iverw train` and `t2iverw predict`: thin wrappers over engine.train and predict.predict."""

from __future__ import annotations

import click


@click.command("train")
@click.option("--dataset", required=True, help="Export directory (`t2iverw export`) or hub id.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory (resumed if it has checkpoints).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config, e.g. benchmark/configs/pfcvr.yaml.")
@click.option("--clip", help="CLIP hub id or local directory (overrides the config).")
@click.option("--epochs", type=int, help="Override the number of epochs.")
@click.option("--batch-size", type=int, help="Override the batch size.")
@click.option("--no-plfa", is_flag=True, help="Switch off part-level alignment (ablation).")
@click.option("--no-bmria", is_flag=True, help="Switch off bidirectional mask recovery (ablation).")
@click.option("--no-aug", is_flag=True, help="Switch off the exposure/noise copies (ablation).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any other config override (repeatable).")
def train(dataset, out, config_path, clip, epochs, batch_size, no_plfa, no_bmria, no_aug, sets) -> None:
    """Train the PFCVR reference baseline (run under `accelerate launch` for several GPUs)."""
    from t2iverw.baseline.config import load_config, parse_override
    from t2iverw.baseline.engine import train as run_training

    overrides = dict(parse_override(s) for s in sets)
    flags = {"clip": clip, "epochs": epochs, "batch_size": batch_size}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    overrides.update({name: False for name, off in (("plfa", no_plfa), ("bmria", no_bmria), ("aug", no_aug)) if off})
    run = run_training(load_config(config_path, overrides), dataset, out)
    click.echo(f"run written to {run}")


@click.command("predict")
@click.option("--run", "run", required=True, type=click.Path(file_okay=False), help="Run directory from `t2iverw train`.")
@click.option("--dataset", required=True, help="Export directory or hub id; its test split is ranked.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="ranks.json to write.")
@click.option("--scores", type=click.Path(dir_okay=False), help="Also write the (queries x gallery) score matrix as .npy.")
@click.option("--top-k", type=int, help="Keep the best K images per caption (default: the whole gallery).")
@click.option("--batch-size", type=int, default=128, show_default=True)
def predict(run, dataset, out, scores, top_k, batch_size) -> None:
    """Rank the test gallery for each test caption.

    Score order: queries = test rows with a caption, in export row order; gallery = all
    test rows, in export row order.
    """
    from t2iverw.baseline.predict import predict as run_predict

    click.echo(f"ranks written to {run_predict(run, dataset, out, scores, top_k, batch_size)}")


commands = [train, predict]
