"""The caption client honours a server's Retry-After (the openai client's own retry machinery).

A small proxy in front of the real `transformers serve` answers the first two chat requests
with 429 and `Retry-After: 2`, then forwards: the client must wait as told, not its own
shorter backoff, and the caption must come through.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.request

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from t2iverw.build import BuildDir
from t2iverw.caption import run_captions



class RateLimitingProxy:
    def __init__(self, upstream: str, refusals: int, retry_after: int):
        self.upstream, self.refusals, self.retry_after = upstream.rstrip("/"), refusals, retry_after
        self.chat_times: list[float] = []
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/v1/{path:path}", self.handle, methods=["GET", "POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def handle(self, request: Request) -> Response:
        path = request.path_params["path"]
        if path == "chat/completions":
            self.chat_times.append(time.monotonic())
            if len(self.chat_times) <= self.refusals:
                return Response('{"error": {"message": "slow down"}}', status_code=429,
                                headers={"Retry-After": str(self.retry_after), "content-type": "application/json"})
        body = await request.body()
        status, content = await asyncio.to_thread(self.forward, request.method, path, body)
        return Response(content, status_code=status, headers={"content-type": "application/json"})

    def forward(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        req = urllib.request.Request(f"{self.upstream}/{path}", data=body or None, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as reply:
            return reply.status, reply.read()

    def __enter__(self) -> RateLimitingProxy:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def test_retry_after_is_honoured(build_dir, vlm_server, scripted_vlm, scripted_answer):
    with RateLimitingProxy(vlm_server.url, refusals=2, retry_after=2) as proxy:
        summary = run_captions(build_dir, endpoints=[f"http://127.0.0.1:{proxy.port}/v1"], model=str(scripted_vlm),
                               max_tokens=64, concurrency=1, limit=1, retries=3, progress=False)
    assert summary.done == 1 and next(iter(BuildDir.open(build_dir).captions().values()))["text"] == scripted_answer
    gaps = [b - a for a, b in zip(proxy.chat_times, proxy.chat_times[1:])]
    assert len(proxy.chat_times) == 3 and all(gap >= 1.9 for gap in gaps), gaps  # openai's own backoff is 0.5-1 s
