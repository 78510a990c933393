"""A pool of OpenAI-compatible endpoints (one vLLM server per GPU or node) behind one `chat` call.

Requests go round-robin to the endpoints that are up. An endpoint that refuses
connections is taken out of rotation for a cool-down that grows while it stays down,
then tried again; timeouts, 429 and 5xx are retried with exponential backoff. The
`openai` client's own retries are off because they would stay on a dead endpoint.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from dataclasses import dataclass

import openai

from t2iverw.errors import T2IError

DEFAULT_ENDPOINT = "http://127.0.0.1:8000/v1"
MAX_COOLDOWN_S = 60.0
START_HINT = "start one with `bash pipelines/serve_vllm.sh` (see pipelines/README.md) or pass --endpoint URL"


def api_key() -> str:
    """The key from the environment; 'EMPTY' (what vLLM expects without --api-key) otherwise. Never printed."""
    return os.environ.get("T2IVERW_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"


class RequestRejected(Exception):
    """The server refused this one request (4xx other than auth/not-found/429): a per-image failure."""


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
            Endpoint(u.rstrip("/"), openai.AsyncOpenAI(base_url=u.rstrip("/"), api_key=key, timeout=timeout, max_retries=0))
            for u in dict.fromkeys(urls)
        ]
        self.retries, self.backoff = retries, backoff
        self._turn = itertools.cycle(range(len(self.endpoints)))

    async def check(self) -> None:
        """Fail fast, in one line, when no endpoint has a server behind it; dead ones start out of rotation."""
        results = await asyncio.gather(*(self._probe(ep) for ep in self.endpoints))
        if not any(results):
            urls = ", ".join(ep.url for ep in self.endpoints)
            raise T2IError(f"no OpenAI-compatible server answers at {urls}; {START_HINT}")

    async def _probe(self, ep: Endpoint) -> bool:
        try:
            await ep.client.models.list()
        except openai.APIStatusError:
            pass  # it answered (some servers, e.g. `transformers serve`, fail to list models)
        except openai.APIConnectionError:
            ep.mark_down(self.backoff)
            return False
        return True

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
        """One chat completion and the endpoint that served it; T2IError once retries are spent."""
        last = ""
        for attempt in range(self.retries + 1):
            ep = await self._next()
            try:
                reply = await ep.client.chat.completions.create(**request)
            except openai.APITimeoutError:
                last = f"timeout at {ep.url}"
            except openai.APIConnectionError:
                last = f"connection to {ep.url} failed"
                ep.mark_down(self.backoff)
                continue  # another endpoint may be up: no extra wait
            except (openai.RateLimitError, openai.InternalServerError) as exc:
                last = f"HTTP {exc.status_code} from {ep.url}"
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
                raise T2IError(f"{ep.url} refused the request (HTTP {exc.status_code}): check --model "
                               f"{request.get('model')!r} and the API key (T2IVERW_API_KEY / OPENAI_API_KEY)") from None
            except openai.APIStatusError as exc:
                raise RequestRejected(f"HTTP {exc.status_code}: {exc.message}") from None
            except openai.APIResponseValidationError as exc:
                raise RequestRejected(f"malformed reply from {ep.url}: {exc.message}") from None
            else:
                ep.mark_up()
                return reply, ep.url
            await asyncio.sleep(min(self.backoff * 2**attempt, MAX_COOLDOWN_S))
        raise T2IError(f"gave up after {self.retries + 1} tries ({last}); the captions written so far are kept, "
                       f"re-run the same command to finish once the server is back ({START_HINT})")

    async def aclose(self) -> None:
        await asyncio.gather(*(ep.client.close() for ep in self.endpoints))
