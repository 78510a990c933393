"""The review app as users run it: `t2iverw review` in a subprocess, driven by a real headless chromium.

The browser is Debian's `chromium` (installed by `.ci/run` with apt-get) launched by
Playwright through `executable_path`: no browser is downloaded by a test framework.
Without chromium the browser tests skip with the install command, except under
T2IVERW_REQUIRE_BROWSER=1 (set by CI), where they fail instead.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

from t2iverw.build import BuildDir
from t2iverw.caption.run import run_captions
from t2iverw.demo import write_truth_parts

START_TIMEOUT = 90.0


class App:
    """One `t2iverw review` process; its URL is read from what it prints."""

    def __init__(self, build: Path, *args: str):
        cmd = [sys.executable, "-m", "t2iverw.cli", "review", str(build), "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.output: list[str] = []
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(lines,), daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=START_TIMEOUT)
            except queue.Empty:
                self.stop()
                raise AssertionError(f"review app did not start: {''.join(self.output)}") from None
            if line is None:
                raise AssertionError(f"review app exited: {''.join(self.output)}")
            match = re.match(r"open (http://\S+)", line)
            if match:
                self.url = match.group(1)
                self.base = re.match(r"http://[^/]+", self.url).group(0)
                return

    def _pump(self, lines: queue.Queue) -> None:
        for line in self.proc.stdout:
            self.output.append(line)
            lines.put(line)
        lines.put(None)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def start_app():
    """Start review apps; every one still running is stopped at the end."""
    apps: list[App] = []

    def start(build: Path, *args: str) -> App:
        app = App(build, *args)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop()


@pytest.fixture
def review_build(build_dir) -> Path:
    """The conftest build with template captions and the sample's true part masks."""
    run_captions(build_dir, backend="template", progress=False)
    write_truth_parts(BuildDir.open(build_dir))
    return build_dir


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "needs Debian's chromium: apt-get install -y chromium"
        if os.environ.get("T2IVERW_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def browser(chromium_path):
    """Per test: Playwright's sync API holds an event loop, which must not outlive the test's own fixtures."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # --no-sandbox: chromium's sandbox cannot start as root in a container
        browser = pw.chromium.launch(executable_path=chromium_path, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def request(base: str, method: str, path: str, body: dict | None = None, headers: dict | None = None):
    """One raw HTTP request: the path is sent exactly as given (no client-side normalisation of '..')."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"Content-Type": "application/json"} if data else {}
    conn.request(method, path, body=data, headers={**hdrs, **(headers or {})})
    response = conn.getresponse()
    return response.status, response.read(), dict(response.getheaders())


@pytest.fixture
def raw_http():
    """`request(base, method, path, body, headers)` over a raw HTTP connection."""
    return request
