"""`t2iverw review`: option parsing only; the app is in app.py, the server in serve.py."""

from __future__ import annotations

import getpass
from pathlib import Path

import click

from t2iverw.options import source_root_option
from t2iverw.review.serve import DEFAULT_PORT
from t2iverw.review.state import SCOPES


@click.command()
@click.argument("build", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--only", "scope", type=click.Choice(list(SCOPES)), default="unreviewed",
              show_default=True, help="Which captions the queue starts with.")
@click.option("--reviewer", default=lambda: getpass.getuser(), show_default="your user name",
              help="Name recorded with every decision (the log is captions/review-NAME).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but the loopback needs --token.")
@click.option("--token", envvar="T2IVERW_REVIEW_TOKEN", help="Secret every request must carry (env T2IVERW_REVIEW_TOKEN).")
@source_root_option
def review(build: Path, port: int, scope: str, reviewer: str, host: str, token: str | None, source_root) -> None:
    """Review and correct the captions of BUILD in the browser: accept, edit, reject, skip."""
    from t2iverw.review.serve import serve_review

    serve_review(build, reviewer=reviewer, scope=scope, host=host, port=port, token=token, source_root=source_root,
                 echo=click.echo)


commands = [review]
