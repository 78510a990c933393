"""`t2iverw caption` and `t2iverw caption-qa`: option parsing only; the work is in run.py and qa.py."""

from __future__ import annotations

from pathlib import Path

import click

BUILD = click.argument("build", type=click.Path(exists=True, file_okay=False, path_type=Path))


@click.command()
@BUILD
@click.option("--backend", type=click.Choice(["openai", "transformers", "template"]), default="openai",
              show_default=True, help="openai: an OpenAI-compatible server (vLLM); transformers: in-process "
              "(--model PATH); template: from the metadata alone.")
@click.option("--endpoint", "endpoints", multiple=True, metavar="URL",
              help="Server base URL; repeat to spread the load.  [default: http://127.0.0.1:8000/v1]")
@click.option("--model", default="Qwen/Qwen3-VL-32B-Instruct", show_default=True,
              help="Served model name, or a local path with --backend transformers.")
@click.option("--prompt", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Prompt template replacing the shipped prompts/caption.md.")
@click.option("--hints/--no-hints", default=True, show_default=True, help="Give the VERI-Wild colour/type/model.")
@click.option("--concurrency", type=click.IntRange(min=1), default=32, show_default=True, help="Requests in flight.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0), default=0.7, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Caption at most N pending images.")
@click.option("--retry-failed", is_flag=True, help="Also retry images whose latest caption failed.")
@click.option("--max-pixels", type=click.IntRange(min=1024), default=512 * 512, show_default=True,
              help="Downscale images above this many pixels before sending.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Seconds per request.")
@click.option("--retries", type=click.IntRange(min=0), default=6, show_default=True,
              help="Retries of a request on timeouts, 429, 5xx and dead endpoints.")
def caption(build: Path, endpoints: tuple[str, ...], **options) -> None:
    """Caption every pending image of BUILD into BUILD/captions.jsonl (resumable), then run caption QA."""
    from t2iverw.caption.run import run_captions

    summary = run_captions(build, endpoints=list(endpoints) or None, **options)
    for line in summary.lines():
        click.echo(line)


@click.command("caption-qa")
@BUILD
def caption_qa(build: Path) -> None:
    """Flag captions of BUILD for review (length, missing attributes, colour/type contradictions, boilerplate)."""
    from t2iverw.caption.qa import run_qa

    for line in run_qa(build).lines():
        click.echo(line)


commands = [caption, caption_qa]
