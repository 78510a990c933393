"""`t2iverw caption` and `t2iverw caption-qa`: option parsing only; the work is in run.py and qa.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from t2iverw.caption.prompt import DEFAULT_HINTS, HINT_FIELDS
from t2iverw.options import runner_options

BUILD = click.argument("build", type=click.Path(exists=True, file_okay=False, path_type=Path))


def caption_options(backends: tuple[str, ...]) -> Callable[[Callable], Callable]:
    """The options that shape caption records: one definition for `t2iverw caption` and pipelines/ray_caption.py."""
    help_of = {"openai": "openai: an OpenAI-compatible server (vLLM)",
               "transformers": "transformers: in-process (--model PATH)", "template": "template: from the metadata alone"}

    def apply(f: Callable) -> Callable:
        for option in reversed([
            click.option("--backend", type=click.Choice(list(backends)), default="openai", show_default=True,
                         help="; ".join(help_of[b] for b in backends) + "."),
            click.option("--endpoint", "endpoints", multiple=True, metavar="URL",
                         help="Server base URL; repeat to spread the load.  [default: http://127.0.0.1:8000/v1]"),
            click.option("--model", help="The served model's name (default: the one the server serves, from "
                                         "/v1/models), or a hub id / local path with --backend transformers."),
            click.option("--wait", type=click.FloatRange(min=0), default=0, show_default=True, metavar="SECONDS",
                         help="Wait this long for a server that is still starting (vLLM loads a 32B model for "
                              "minutes)."),
            click.option("--prompt", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                         help="Prompt template replacing the shipped prompts/caption.md."),
            click.option("--hints", type=click.Choice(list(HINT_FIELDS)), default=DEFAULT_HINTS, show_default=True,
                         help="Metadata told to the model: none; witness (body colour and type, what a witness "
                              "sees); model (also the make and model, facts no witness knows)."),
            click.option("--concurrency", type=click.IntRange(min=1), default=32, show_default=True,
                         help="Requests in flight (per process or Ray actor)."),
            click.option("--max-tokens", type=click.IntRange(min=1), default=256, show_default=True),
            click.option("--temperature", type=click.FloatRange(min=0), default=0.7, show_default=True),
            click.option("--seed", type=int, default=0, show_default=True),
            click.option("--max-pixels", type=click.IntRange(min=1024), default=512 * 512, show_default=True,
                         help="Downscale images above this many pixels before sending."),
            click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
                         help="Seconds per request: the read timeout, and (times the tries, plus their backoff) "
                              "a total deadline, so a reply that trickles or never comes fails that image as "
                              "`timeout`."),
            click.option("--retries", type=click.IntRange(min=0), default=6, show_default=True,
                         help="The openai client's retries of a request (timeouts, 408/409/429/5xx, honouring "
                              "Retry-After) before it moves to another endpoint."),
        ]):
            f = option(f)
        return f
    return apply


@click.command()
@BUILD
@caption_options(("openai", "transformers", "template"))
@runner_options
def caption(build: Path, endpoints: tuple[str, ...], shard, mode, source_root, **options) -> None:
    """Caption every pending image of BUILD into BUILD/captions/ (resumable, shardable), then summarise QA."""
    from t2iverw.build import BuildDir
    from t2iverw.caption.run import run_captions
    from t2iverw.runner import parse_shard

    summary = run_captions(BuildDir.open(build, source_root), endpoints=list(endpoints) or None,
                           shard=parse_shard(shard), mode=mode, **options)
    for line in summary.lines():
        click.echo(line)


@click.command("caption-qa")
@BUILD
def caption_qa(build: Path) -> None:
    """Flag captions of BUILD for review (length, missing attributes, colour/type contradictions, boilerplate)."""
    from t2iverw.caption.qa import run_qa
    from t2iverw.errors import T2IError

    summary = run_qa(build)
    if not summary.captions:
        raise T2IError(f"{build} has no caption yet, so there is nothing to check; run `t2iverw caption {build}` first")
    for line in summary.lines():
        click.echo(line)


commands = [caption, caption_qa]
