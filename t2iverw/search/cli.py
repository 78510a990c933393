"""`t2iverw search`: option parsing only; the searcher is in index.py, the page in app.py."""

from __future__ import annotations

import json

import click

from t2iverw.errors import T2IError
from t2iverw.review.serve import DEFAULT_PORT


@click.command()
@click.argument("args", nargs=-1, metavar="RUN [QUERY]")
@click.option("--dataset", required=True, help="Export directory or hub id; its test split is the gallery.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Images to show.")
@click.option("--json", "as_json", is_flag=True, help='Print [{"image_id", "vehicle_id", "score"}, ...], best first.')
@click.option("--model", type=click.Choice(["clip"]), help="A zero-shot model instead of RUN (with --clip PATH).")
@click.option("--clip", "clip_path", type=click.Path(file_okay=False), help="Saved CLIPModel directory for --model clip.")
@click.option("--force", is_flag=True, help="Search a dataset other than the one the run was trained for.")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Where the encoded gallery is cached (default: RUN/search-cache; zero-shot: not cached).")
@click.option("--device", help="torch device (default: cuda when present).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--serve", is_flag=True, help="Serve the search page (text box, test captions, failure browser).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT + 1, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; anything but the loopback needs --token.")
@click.option("--token", envvar="T2IVERW_REVIEW_TOKEN", help="Secret every request must carry (env T2IVERW_REVIEW_TOKEN).")
def search(args, dataset, top, as_json, model, clip_path, force, cache_dir, device, batch_size, serve, port, host,
           token) -> None:
    """Find the test images that match a description: RUN is a run directory or `clip:PATH` (zero-shot CLIP).

    The test gallery is encoded once and cached under the run, keyed by the checkpoint and the
    gallery's fingerprint; each query then costs one text encoding and one matrix product.
    """
    from t2iverw.search.index import open_searcher

    run, query = _positional(args, model, clip_path)
    if not serve and not query.strip():
        raise T2IError('the query is empty: t2iverw search RUN --dataset DS "a white SUV with a roof rack"')
    if serve:
        from t2iverw.review.serve import check_bind

        loopback = check_bind(host, token, "search the run")
    searcher = open_searcher(run, dataset, force=force, device=device, batch_size=batch_size, cache_dir=cache_dir)
    if searcher.meta.get("warning"):
        click.echo(f"Warning: {searcher.meta['warning']}", err=True)
    if serve:
        from t2iverw.review.serve import serve_app
        from t2iverw.search.app import create_search_app

        app = create_search_app(searcher, dataset, token=token, loopback=loopback, top=top)
        serve_app(app, host, port, token, click.echo, [
            f"searching {len(searcher.image_ids)} test images of {dataset} with {run} (cache: {searcher.meta['cache']})",
            "Ctrl+C stops"])
        return
    hits = searcher.search(query, top)
    if as_json:
        click.echo(json.dumps([h.to_dict() for h in hits]))
        return
    click.echo(f"top {len(hits)} of {len(searcher.image_ids)} test images (gallery cache: {searcher.meta['cache']})")
    for rank, h in enumerate(hits, 1):
        click.echo(f"{rank:3d}. {h.image_id}  vehicle {h.vehicle_id}  score {h.score:.4f}")


def _positional(args: tuple[str, ...], model: str | None, clip_path: str | None) -> tuple[str, str]:
    """(run, query) from RUN [QUERY], or from [QUERY] with --model clip --clip PATH."""
    if model == "clip":
        if not clip_path:
            raise T2IError("--model clip needs --clip PATH (a saved CLIPModel directory)")
        run, rest = f"clip:{clip_path}", list(args)
    else:
        if not args:
            raise T2IError("give RUN (a run directory, or clip:PATH) and a QUERY")
        run, rest = args[0], list(args[1:])
    if len(rest) > 1:
        raise T2IError(f"one QUERY expected, got {len(rest)} words: put the description in quotes")
    return run, rest[0] if rest else ""


commands = [search]
