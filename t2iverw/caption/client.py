"""A pool of OpenAI-compatible endpoints (one vLLM server per GPU or node) behind one `chat` call.

Retries are the `openai` client's own: it retries timeouts, connection errors, 408, 409,
429 and 5xx with exponential backoff and honours the server's `Retry-After`. On top of
that the pool spreads requests round-robin over the endpoints that are up: an endpoint
that still fails after the client's retries is taken out of rotation for a cool-down
that grows while it stays down, and the request moves to another endpoint.

Before the run, `start` waits (up to `--wait` seconds) for an endpoint to answer
`/v1/models` and learns which model it serves, so records name the served model, not
the command-line flag.

A hostile or broken server costs bounded time and one image, never the run: `timeout`
is httpx's per-read timeout (a server that sends nothing) and also, with the client's
retries and their backoff, a wall deadline on the whole request (a server that trickles
a byte at a time resets a read timeout forever). A reply that is not a chat completion
(an HTML page, broken JSON, a bare string) fails that image as `rejected`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from dataclasses import dataclass

import openai

from t2iverw.errors import T2IError

DEFAULT_ENDPOINT = "http://127.0.0.1:8000/v1"
MAX_COOLDOWN_S = 60.0
RETRY_DELAY_S = 8.0  # the openai client's longest backoff between its own retries (without Retry-After)
POLL_S = 2.0
START_HINT = "start one with `bash pipelines/serve_vllm.sh` (see pipelines/README.md) or pass --endpoint URL"


def api_key() -> str:
    """The key from the environment; 'EMPTY' (what vLLM expects without --api-key) otherwise. Never printed."""
    return os.environ.get("T2IVERW_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"


class RequestRejected(Exception):
    """The server refused this one request (4xx other than auth/not-found/429) or sent no chat completion:
    a per-image failure."""

    reason = "rejected"


class RequestTimedOut(RequestRejected):
    """No complete reply within the request's deadline on any endpoint: a per-image failure."""

    reason = "timeout"


@dataclass(frozen=True)
class ServedModel:
    id: str  # the name requests use
    checkpoint: str | None  # what the server loaded (vLLM's `root`), when it says


@dataclass
class Endpoint:
    url: str
    client: openai.AsyncOpenAI
    down_until: float = 0.0
    failures: int = 0

    def mark_down(self, backoff: float) -> None:
        """Out of rotation for a cool-down that doubles per outage; failures of requests already in flight
        when it went down are the same outage."""
        now = time.monotonic()
        if self.down_until > now:
            return
        self.failures += 1
        self.down_until = now + min(backoff * 2 ** (self.failures - 1), MAX_COOLDOWN_S)

    def mark_up(self) -> None:
        self.failures, self.down_until = 0, 0.0


class EndpointPool:
    def __init__(self, urls: list[str], *, timeout: float = 300.0, retries: int = 6, backoff: float = 1.0):
        if not urls:
            raise T2IError("no --endpoint given")
        key = api_key()
        self.endpoints = [
            Endpoint(u.rstrip("/"), openai.AsyncOpenAI(base_url=u.rstrip("/"), api_key=key, timeout=timeout,
                                                       max_retries=retries))
            for u in dict.fromkeys(urls)
        ]
        self.backoff, self.timeout = backoff, timeout
        self.deadline = timeout * (retries + 1) + RETRY_DELAY_S * retries  # every attempt may use its full timeout
        self._turn = itertools.cycle(range(len(self.endpoints)))

    async def start(self, wait: float = 0.0) -> list[ServedModel]:
        """Wait up to `wait` s for some endpoint to answer /v1/models; dead ones start out of rotation.

        Returns what the first live endpoint lists (an empty list when it lists nothing).
        """
        deadline = time.monotonic() + wait
        while True:
            listed = await asyncio.gather(*(self._models(ep) for ep in self.endpoints))
            live = [models for models in listed if models is not None]
            if live:
                return live[0]
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        urls = ", ".join(ep.url for ep in self.endpoints)
        waited = f" after waiting {wait:g}s" if wait else ""
        raise T2IError(f"no OpenAI-compatible server answers at {urls}{waited}; if one is still loading its model "
                       f"(vLLM takes minutes for a 32B model), pass --wait SECONDS; else {START_HINT}")

    async def _models(self, ep: Endpoint) -> list[ServedModel] | None:
        """What the endpoint lists, or None when nothing answers there (it is then marked down)."""
        try:
            page = await ep.client.with_options(max_retries=0, timeout=10.0).models.list()
        except openai.APIStatusError:
            ep.mark_up()
            return []  # it answered, but lists nothing useful
        except openai.APIError:
            ep.mark_down(self.backoff)
            return None
        ep.mark_up()
        return [ServedModel(m.id, getattr(m, "root", None)) for m in page.data]

    async def _next(self) -> Endpoint:
        """The next endpoint in rotation that is up; if all are down, wait for the first to come back."""
        for _ in range(len(self.endpoints)):
            ep = self.endpoints[next(self._turn)]
            if ep.down_until <= time.monotonic():
                return ep
        ep = min(self.endpoints, key=lambda e: e.down_until)
        await asyncio.sleep(max(0.0, ep.down_until - time.monotonic()))
        return ep

    async def chat(self, **request) -> tuple[object, str]:
        """One chat completion and the endpoint that served it; T2IError once every endpoint has failed it."""
        last, timeouts, turns = "", 0, max(2, len(self.endpoints))
        for _ in range(turns):
            ep = await self._next()
            try:
                reply = await asyncio.wait_for(ep.client.chat.completions.create(**request), self.deadline)
            except (openai.APITimeoutError, asyncio.TimeoutError):
                last, timeouts = f"no complete reply from {ep.url} within the {self.timeout:g}s timeout", timeouts + 1
            except openai.APIConnectionError:
                last = f"connection to {ep.url} failed"
                ep.mark_down(self.backoff)
            except (openai.RateLimitError, openai.InternalServerError) as exc:
                last = f"HTTP {exc.status_code} from {ep.url}"
                ep.mark_down(self.backoff)
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
                raise T2IError(f"{ep.url} refused the request (HTTP {exc.status_code}): check --model "
                               f"{request.get('model')!r} and the API key (T2IVERW_API_KEY / OPENAI_API_KEY)") from None
            except openai.APIStatusError as exc:
                raise RequestRejected(f"HTTP {exc.status_code}: {_message(exc)}") from None
            except openai.APIResponseValidationError as exc:
                raise RequestRejected(f"malformed reply from {ep.url}: {exc.message}") from None
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise RequestRejected(f"malformed reply from {ep.url}: not JSON ({exc})") from None
            else:
                ep.mark_up()
                if not isinstance(reply, openai.types.chat.ChatCompletion) or not reply.choices:
                    raise RequestRejected(f"malformed reply from {ep.url}: not a chat completion: "
                                          f"{str(reply)[:100]!r}")
                return reply, ep.url
        if timeouts == turns:
            raise RequestTimedOut(last)  # a slow or stuck reply costs this image, not the run
        raise T2IError(f"gave up on a request after retrying every endpoint ({last}); the captions written so far "
                       f"are kept: re-run the same command to finish once a server is back ({START_HINT})")

    async def aclose(self) -> None:
        await asyncio.gather(*(ep.client.close() for ep in self.endpoints))


def _message(exc: openai.APIStatusError) -> str:
    """The server's own reason (vLLM puts it in error.message), on one line."""
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error", body)
    text = err.get("message") if isinstance(err, dict) else None
    return " ".join(str(text or exc.message).split())
