"""The caption stage: a worker that captions one image per request, run by the stage runner.

The runner (t2iverw/runner) owns what is pending, the lock, the record order, the
settings fingerprint and failure isolation; this module owns only the captioning: load
the crop, send it with the prompt, judge the reply, and say what happened. A bad reply
(empty, cut off, refusal, repetition loop, over MAX_CAPTION_CHARS) is retried once with the next seed, then
recorded as failed with the reason; a request the server rejects fails that image alone.

A record body (see annotations/schema.md for the envelope the runner adds): image_id,
caption_id (= image_id), status ok|failed, text, reason (failed: bad_image, rejected,
timeout, empty, cut_off, refusal, repetitive, too_long; the text of the last reply is
kept for review, its first MAX_CAPTION_CHARS characters),
detail, endpoint, seed (this request's), usage {prompt_tokens, completion_tokens},
latency_s, finish_reason, attempts, and qa (review flags, ok records only). The
settings that shape a caption (backend, served model and checkpoint, prompt hash, hint
mode, sampling, pixel budget) are the record's `settings`.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from t2iverw.build import BuildDir
from t2iverw.caption.backends import Backend, Sampling, make_backend
from t2iverw.caption.client import DEFAULT_ENDPOINT, RequestRejected
from t2iverw.caption.image import DEFAULT_MAX_PIXELS, BadImage, load_crop
from t2iverw.caption.prompt import DEFAULT_HINTS, Prompt, load_prompt
from t2iverw.caption.qa import QASummary, qa_flags, reply_problem, run_qa, words
from t2iverw.constants import MAX_CAPTION_CHARS
from t2iverw.runner import Item, ItemFailed, Mode, RunReport, Worker, run_stage

META = ("color", "type", "model")
ATTEMPTS = 2  # a bad reply (empty, cut off, refusal, loop) is retried once, then recorded as failed
TEMPLATE_VERSION = 1  # bump when template_caption's wording changes


class CaptionWorker(Worker):
    stage = "captions"
    columns = META
    batch_size = 1  # one request per item; `parallel` requests in flight

    def __init__(self, engine: Backend, prompt: Prompt, sampling: Sampling, *,
                 max_pixels: int = DEFAULT_MAX_PIXELS, concurrency: int = 32):
        self.engine, self.prompt, self.sampling, self.max_pixels = engine, prompt, sampling, max_pixels
        self.parallel = max(1, concurrency)
        self.completion_tokens = 0
        self.words = array("l")  # words of each usable caption, for the mean: 8 bytes a caption

    async def open(self) -> None:
        await self.engine.start()

    def settings(self) -> dict:
        if not self.engine.generative:
            return {"backend": self.engine.name, "model": self.engine.model, "template": TEMPLATE_VERSION}
        s = self.sampling
        return {"backend": self.engine.name, "model": self.engine.model, "checkpoint": self.engine.checkpoint,
                "prompt_sha256": self.prompt.sha256, "hints": self.prompt.hints,
                "sampling": {"max_tokens": s.max_tokens, "temperature": s.temperature, "seed": s.seed},
                "max_pixels": self.max_pixels}

    def setup(self) -> None:
        load = getattr(self.engine, "load", None)
        if load is not None:
            load()  # in-process weights: only once something is pending

    def load(self, item: Item):
        if not self.engine.generative:
            return None
        try:
            return load_crop(item.path, self.max_pixels)
        except BadImage as exc:
            raise ItemFailed("bad_image", f"unreadable image {item.path}: {exc}") from None

    async def process(self, batch: list[tuple[Item, object]]) -> list[dict]:
        return list(await asyncio.gather(*(self._caption(item, image) for item, image in batch)))

    async def close(self) -> None:
        await self.engine.aclose()

    async def _caption(self, item: Item, image) -> dict:
        meta = {k: item.row.get(k) for k in META}
        base = {"image_id": item.image_id, "caption_id": item.image_id}
        text = self.prompt.render(meta)
        for attempt in range(1, ATTEMPTS + 1):
            seed = self.sampling.seed + attempt - 1
            sampling = Sampling(self.sampling.max_tokens, self.sampling.temperature, seed)
            began = time.perf_counter()
            try:
                reply = await self.engine.generate(text, image, meta, sampling)
            except RequestRejected as exc:
                return {**base, "status": "failed", "reason": exc.reason, "detail": str(exc), "text": "",
                        "attempts": attempt}
            self.completion_tokens += reply.completion_tokens
            if len(reply.text) > MAX_CAPTION_CHARS:
                problem, reply.text = "too_long", reply.text[:MAX_CAPTION_CHARS]
            else:
                problem = reply_problem(reply.text, reply.finish_reason)
            if problem is None:
                break
        record = {
            **base,
            "status": "ok" if problem is None else "failed",
            "text": reply.text,
            "endpoint": reply.endpoint,
            "seed": seed if self.engine.generative else None,
            "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens},
            "latency_s": round(time.perf_counter() - began, 3),
            "finish_reason": reply.finish_reason,
            "attempts": attempt,
        }
        if problem is None:
            record["qa"] = qa_flags(reply.text, meta)
            self.words.append(len(words(reply.text)))
        else:
            record["reason"] = problem
        return record


@dataclass
class CaptionSummary:
    report: RunReport
    completion_tokens: int = 0
    words: Sequence[int] = field(default_factory=list)
    qa: QASummary | None = None

    @property
    def pending(self) -> int:
        return self.report.pending

    @property
    def done(self) -> int:
        return self.report.ok

    @property
    def failed(self) -> dict[str, int]:
        return dict(self.report.failed)

    def lines(self) -> list[str]:
        out = self.report.lines("captioned")
        if self.pending and self.report.seconds:
            mean = f", mean {sum(self.words) / len(self.words):.1f} words" if self.words else ""
            out[0] += f"; {self.completion_tokens / self.report.seconds:.0f} generated tokens/s{mean}"
        return out + (self.qa.lines() if self.qa else [])


def run_captions(
    build: str | Path | BuildDir,
    *,
    limit: int | None = None,
    retry_failed: bool = False,
    mode: Mode | str = Mode.CHECK,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
    **options,
) -> CaptionSummary:
    """Caption the pending images of `build` (of `shard`) and summarise caption QA; T2IError when no server answers.

    `options` are `caption_worker`'s (backend, endpoints, model, prompt, hints, sampling, ...).
    """
    build = build if isinstance(build, BuildDir) else BuildDir.open(build)
    worker = caption_worker(**options)
    report = run_stage(build, worker, shard=shard, mode=Mode(mode), retry_failed=retry_failed, limit=limit,
                       progress=progress)
    return CaptionSummary(report, worker.completion_tokens, worker.words, run_qa(build))


def caption_worker(
    *,
    backend: str = "openai",
    endpoints: list[str] | None = None,
    model: str | None = None,
    prompt: str | Path | None = None,
    hints: str = DEFAULT_HINTS,
    concurrency: int = 32,
    max_tokens: int = 256,
    temperature: float = 0.7,
    seed: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    timeout: float = 300.0,
    retries: int = 6,
    backoff: float = 1.0,
    wait: float = 0.0,
) -> CaptionWorker:
    """A caption worker from command-line options (the in-process run and each Ray actor build it alike)."""
    engine = make_backend(backend, model=model, endpoints=list(endpoints or [DEFAULT_ENDPOINT]), timeout=timeout,
                          retries=retries, backoff=backoff, wait=wait)
    return CaptionWorker(engine, load_prompt(prompt, hints=hints), Sampling(max_tokens, temperature, seed),
                         max_pixels=max_pixels, concurrency=concurrency)
