"""`t2iverw review`: bind, print the URL, and serve the review app with uvicorn until Ctrl+C."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path

from t2iverw.build import BuildDir
from t2iverw.errors import T2IError
from t2iverw.review.decisions import DecisionLog

DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_review(build: str | Path, *, reviewer: str, scope: str = "unreviewed", host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT, token: str | None = None, source_root: str | Path | None = None,
                 echo: Callable[[str], None] = print) -> None:
    """Serve the review app of `build` on host:port (port 0: any free port) until interrupted."""
    from t2iverw.review.app import create_app

    loopback = check_bind(host, token, "write to the build")
    # the reviewer's log is held for the app's lifetime: a second app of the same reviewer stops here, in one line
    with DecisionLog(BuildDir.open(build, source_root), reviewer) as log:
        app = create_app(log, scope=scope, token=token, loopback=loopback)
        serve_app(app, host, port, token, echo, [
            f"reviewing {build} as {reviewer!r} (queue: {scope})",
            "keys: a accept, e edit, Ctrl+Enter save, r reject, s skip, 1-6 parts, o overlay; Ctrl+C stops"])


def check_bind(host: str, token: str | None, what: str) -> bool:
    """Whether `host` is the loopback; any other address needs a token (the rule of every served app)."""
    loopback = is_loopback(host)
    if not loopback and not token:
        raise T2IError(f"--host {host} lets other machines {what}: give --token SECRET "
                       f"(every request must then carry it), or keep the default --host 127.0.0.1")
    return loopback


def serve_app(app, host: str, port: int, token: str | None, echo: Callable[[str], None], lines: list[str]) -> None:
    """Bind host:port (0: any free port), print `lines[0]`, the URL, `lines[1:]`, and serve until interrupted."""
    import uvicorn

    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("127.0.0.1", "localhost") else host
    echo(lines[0])
    echo(f"open http://{shown}:{bound}/" + (f"?token={token}" if token else ""))
    for line in lines[1:]:
        echo(line)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as exc:
        raise T2IError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port") from None
