"""The caption stage: caption every pending image of a build, append one record per image, then QA.

Pending means indexed but without a record (with `retry_failed`, also those whose
latest record failed), so a killed run is resumed by running it again: finished images
are never redone and a record is written only once its caption is final. Workers pull
from one queue, so at most `concurrency` requests are in flight however many images
there are (the in-process transformers backend runs one at a time and the workers
just keep the next images decoded).

A record (one JSON line of BUILD/captions.jsonl): image_id, caption_id (= image_id),
status ok|failed, text, reason (failed: bad_image, rejected, empty, cut_off, refusal,
repetitive; the text of the last reply is kept for review), backend, model, endpoint,
prompt_hash (SHA-256 of the prompt template), hints, sampling {max_tokens, temperature,
seed}, usage {prompt_tokens, completion_tokens}, latency_s, finish_reason, attempts,
and qa (review flags, ok records only). `caption-qa` re-appends records whose flags
changed; the latest line of an image wins.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from t2iverw.build import BuildDir
from t2iverw.caption.backends import DEFAULT_MODEL, Backend, Sampling, make_backend
from t2iverw.caption.client import DEFAULT_ENDPOINT, RequestRejected
from t2iverw.caption.image import DEFAULT_MAX_PIXELS, BadImage, load_crop
from t2iverw.caption.prompt import Prompt, load_prompt
from t2iverw.caption.qa import QASummary, qa_flags, reply_problem, run_qa, words

META = ("color", "type", "model")
ATTEMPTS = 2  # a bad reply (empty, cut off, refusal, loop) is retried once, then recorded as failed


@dataclass
class Item:
    image_id: str
    path: Path
    meta: dict


@dataclass
class CaptionSummary:
    pending: int = 0
    done: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    completion_tokens: int = 0
    seconds: float = 0.0
    words: list[int] = field(default_factory=list)
    qa: QASummary | None = None

    def lines(self) -> list[str]:
        if not self.pending:
            return ["nothing to caption: every image has a caption record (--retry-failed retries failures)"] + (
                self.qa.lines() if self.qa else [])
        rate = self.completion_tokens / self.seconds if self.seconds else 0.0
        mean = f", mean {sum(self.words) / len(self.words):.1f} words" if self.words else ""
        out = [f"captioned {self.done} of {self.pending} pending images in {self.seconds:.1f}s "
               f"({rate:.0f} generated tokens/s{mean})"]
        out += [f"  failed ({reason}): {n}" for reason, n in sorted(self.failed.items())]
        return out + (self.qa.lines() if self.qa else [])


def pending_items(build: BuildDir, *, retry_failed: bool = False, limit: int | None = None) -> list[Item]:
    """Indexed images still to caption, in index order."""
    latest = build.latest_records("captions")
    source = build.source_root
    todo = []
    for row in build.images(["image_id", "path", *META]).to_pylist():
        rec = latest.get(row["image_id"])
        if rec is None or (retry_failed and rec["status"] == "failed"):
            todo.append(Item(row["image_id"], source / row["path"], {k: row[k] for k in META}))
    return todo[:limit] if limit is not None else todo


def run_captions(
    build: str | Path | BuildDir,
    *,
    backend: str = "openai",
    endpoints: list[str] | None = None,
    model: str = DEFAULT_MODEL,
    prompt: str | Path | None = None,
    hints: bool = True,
    concurrency: int = 32,
    max_tokens: int = 256,
    temperature: float = 0.7,
    seed: int = 0,
    limit: int | None = None,
    retry_failed: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    timeout: float = 300.0,
    retries: int = 6,
    backoff: float = 1.0,
    progress: bool = True,
) -> CaptionSummary:
    """Caption the pending images of `build` and run caption QA; raises T2IError when the server is gone."""
    build = build if isinstance(build, BuildDir) else BuildDir.open(build)
    items = pending_items(build, retry_failed=retry_failed, limit=limit)
    summary = CaptionSummary(pending=len(items))
    if items:
        engine = make_backend(backend, model=model, endpoints=list(endpoints or [DEFAULT_ENDPOINT]),
                              timeout=timeout, retries=retries, backoff=backoff)
        job = _Job(build, engine, load_prompt(prompt, hints=hints), Sampling(max_tokens, temperature, seed),
                   max_pixels, summary)
        asyncio.run(job.run(items, max(1, concurrency), progress))
    summary.qa = run_qa(build)
    return summary


@dataclass
class _Job:
    build: BuildDir
    engine: Backend
    prompt: Prompt
    sampling: Sampling
    max_pixels: int
    summary: CaptionSummary

    async def run(self, items: list[Item], concurrency: int, progress: bool) -> None:
        todo: asyncio.Queue[Item] = asyncio.Queue()
        for item in items:
            todo.put_nowait(item)
        finished: asyncio.Queue[dict | None] = asyncio.Queue()
        start = time.perf_counter()
        try:
            await self.engine.start()
            with self.build.log_writer("captions") as log, \
                    tqdm(total=len(items), unit="img", desc="caption", disable=not progress) as bar:
                writer = asyncio.create_task(self._write(finished, log, bar))
                workers = [asyncio.create_task(self._work(todo, finished)) for _ in range(concurrency)]
                try:
                    await asyncio.gather(*workers)
                finally:
                    for w in workers:
                        w.cancel()
                    await asyncio.gather(*workers, return_exceptions=True)
                    finished.put_nowait(None)
                    await writer  # every caption finished before a failure is still written
        finally:
            self.summary.seconds = time.perf_counter() - start
            await self.engine.aclose()

    async def _work(self, todo: asyncio.Queue, finished: asyncio.Queue) -> None:
        while not todo.empty():
            finished.put_nowait(await self._caption(todo.get_nowait()))

    async def _write(self, finished: asyncio.Queue, log, bar: tqdm) -> None:
        """Group commit: records finished during one fsync go out together in the next, off the event loop.

        An fsync per record on the loop would cap a run at a few hundred captions/s and
        stall every request meanwhile; a kill still loses only captions not yet written,
        which the next run redoes.
        """
        while True:
            batch = [await finished.get()]
            while not finished.empty():
                batch.append(finished.get_nowait())
            records = [r for r in batch if r is not None]
            if records:
                await asyncio.to_thread(log.write_many, records)
                for record in records:
                    self._count(record, bar)
            if batch[-1] is None:
                return

    def _count(self, record: dict, bar: tqdm) -> None:
        if record["status"] == "ok":
            self.summary.done += 1
            self.summary.words.append(len(words(record["text"])))
        else:
            self.summary.failed[record["reason"]] = self.summary.failed.get(record["reason"], 0) + 1
            bar.set_postfix(failed=sum(self.summary.failed.values()), refresh=False)
        bar.update()

    async def _caption(self, item: Item) -> dict:
        generative = self.engine.generative
        base = {"image_id": item.image_id, "caption_id": item.image_id, "backend": self.engine.name,
                "model": self.engine.model, "prompt_hash": self.prompt.sha256 if generative else None,
                "hints": self.prompt.hints and generative}
        image = None
        if generative:
            try:
                image = await asyncio.to_thread(load_crop, item.path, self.max_pixels)
            except BadImage as exc:
                return {**base, "status": "failed", "reason": "bad_image", "detail": str(exc), "text": "", "attempts": 0}
        text = self.prompt.render(item.meta)
        for attempt in range(1, ATTEMPTS + 1):
            sampling = Sampling(self.sampling.max_tokens, self.sampling.temperature, self.sampling.seed + attempt - 1)
            began = time.perf_counter()
            try:
                reply = await self.engine.generate(text, image, item.meta, sampling)
            except RequestRejected as exc:
                return {**base, "status": "failed", "reason": "rejected", "detail": str(exc), "text": "",
                        "attempts": attempt}
            self.summary.completion_tokens += reply.completion_tokens
            problem = reply_problem(reply.text, reply.finish_reason)
            if problem is None:
                break
        record = {
            **base,
            "status": "ok" if problem is None else "failed",
            "text": reply.text,
            "endpoint": reply.endpoint,
            "sampling": {"max_tokens": sampling.max_tokens, "temperature": sampling.temperature, "seed": sampling.seed}
            if generative else None,
            "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens},
            "latency_s": round(time.perf_counter() - began, 3),
            "finish_reason": reply.finish_reason,
            "attempts": attempt,
        }
        if problem is None:
            record["qa"] = qa_flags(reply.text, item.meta)
        else:
            record["reason"] = problem
        return record
