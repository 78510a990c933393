"""The caption stage against a hostile OpenAI-compatible server (a real HTTP server on a local port).

Each bad reply (an HTML page, broken JSON, a 1 MB body, a 500 storm, a reply that trickles
forever, a server that never answers) must cost bounded time and end in a failed record
with its reason, or, when no request can succeed, in one `Error:` line with what was
written kept; a rerun against a sane server then captions the failed images.
"""

from __future__ import annotations

import json
import random
import string
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

MAX_CAPTION_CHARS = 4000  # run.py documents this limit; the test holds its own copy
from t2iverw.cli import cli

GOOD = "A red sedan seen from the front, with two headlights, a dark windscreen, four wheels and a roof rack."
N = 3  # images per run


def completion(text: str) -> bytes:
    return json.dumps({
        "id": "c1", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
    }).encode()


def long_text(chars: int) -> str:
    """Varied words (no repetition loop for the QA to catch): only a length limit can refuse it."""
    rng = random.Random(0)
    out, size = [], 0
    while size < chars:
        word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9)))
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


# Built once at import: made per request (about 1 s) it ate into the client's 2 s deadline on a
# loaded machine, and the image failed with "timeout" instead of the length limit under test.
HUGE_CAPTION = completion(long_text(1_000_000))


class Hostile:
    """A ThreadingHTTPServer whose chat replies follow `mode`; /v1/models always answers sanely."""

    def __init__(self, mode: str = "good"):
        self.mode, self.chats, self.stop = mode, 0, threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self.reply(200, json.dumps({"object": "list", "data": [
                    {"id": "m", "object": "model", "created": 0, "owned_by": "t"}]}).encode())

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.chats += 1
                outer.handle(self, outer.chats)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def handle(self, h, n: int) -> None:
        mode = self.mode
        if mode == "good" or (mode == "storm_after_1" and n == 1):
            h.reply(200, completion(GOOD))
        elif mode == "html":
            h.reply(200, b"<html><body><h1>Welcome to nginx!</h1></body></html>", "text/html")
        elif mode == "bad_json":
            h.reply(200, b'{"choices": [')
        elif mode == "huge_caption":
            h.reply(200, HUGE_CAPTION)
        elif mode == "huge_garbage":
            h.reply(200, b"x" * 1_000_000, "text/plain")
        elif mode in ("storm", "storm_after_1"):
            h.reply(500, b'{"error": {"message": "internal storm"}}')
        elif mode == "trickle":
            h.send_response(200)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", "1000000")
            h.end_headers()
            h.wfile.flush()
            while not self.stop.wait(0.5):
                try:
                    h.wfile.write(b" ")
                    h.wfile.flush()
                except OSError:
                    return
        elif mode == "silent":
            self.stop.wait()

    def __enter__(self) -> Hostile:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def caption(build, url: str, *extra: str):
    began = time.monotonic()
    result = CliRunner().invoke(cli, ["caption", str(build), "--endpoint", url, "--timeout", "2", "--retries", "0",
                                      "--limit", str(N), "--concurrency", "2", *extra])
    return result, time.monotonic() - began


def records(build) -> list[dict]:
    path = build / "captions" / "main.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_clean(result) -> None:
    """No traceback: the CLI ended by itself (exit 0, or exit 2 with one Error: line)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


def assert_failed_then_rerun_completes(build, result, reason: str, detail: str = "") -> None:
    assert_clean(result)
    assert result.exit_code == 0, result.output
    recs = records(build)
    assert len(recs) == N and {r["status"] for r in recs} == {"failed"}, recs
    assert {r["reason"] for r in recs} == {reason}, [r.get("detail") for r in recs]
    assert all(detail in r.get("detail", "") for r in recs), [r.get("detail") for r in recs]
    assert all(len(r.get("text", "")) <= MAX_CAPTION_CHARS for r in recs)  # no 1 MB text kept in the log
    with Hostile("good") as good:
        again, _ = caption(build, good.url, "--retry-failed")
    assert_clean(again)
    assert again.exit_code == 0, again.output
    latest = {r["image_id"]: r for r in records(build)}
    assert len(latest) == N and all(r["status"] == "ok" and r["text"] == GOOD for r in latest.values())


@pytest.mark.parametrize("mode, reason, detail", [
    ("html", "rejected", "malformed reply"),
    ("bad_json", "rejected", "malformed reply"),
    ("huge_garbage", "rejected", "malformed reply"),
    ("huge_caption", "too_long", ""),
])
def test_a_malformed_reply_fails_each_image_with_its_reason(build_dir, mode, reason, detail):
    with Hostile(mode) as server:
        result, seconds = caption(build_dir, server.url)
    assert seconds < 20
    assert_failed_then_rerun_completes(build_dir, result, reason, detail)


@pytest.mark.parametrize("mode", ["trickle", "silent"])
def test_a_reply_that_never_ends_is_cut_by_the_request_deadline(build_dir, mode):
    with Hostile(mode) as server:
        result, seconds = caption(build_dir, server.url)
    # 3 images, 2 in flight, each cut at the 2 s deadline and tried on 2 endpoint turns: about 8 s, never forever
    assert seconds < 20, seconds
    assert_failed_then_rerun_completes(build_dir, result, "timeout", "2")


def test_a_500_storm_ends_the_run_with_one_error_line_keeping_what_was_written(build_dir):
    with Hostile("storm_after_1") as server:
        result, seconds = caption(build_dir, server.url, "--concurrency", "1")
    assert seconds < 20, seconds
    assert_clean(result)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "HTTP 500" in errors[0], result.output
    assert [r["status"] for r in records(build_dir)] == ["ok"]  # the caption before the storm is kept
    with Hostile("good") as good:
        again, _ = caption(build_dir, good.url)
    assert again.exit_code == 0, again.output
    ok = [r for r in records(build_dir) if r["status"] == "ok"]
    assert len({r["image_id"] for r in ok}) == len(ok) == 1 + N  # the kept one is not redone; N more captioned
