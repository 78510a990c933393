"""The review app as users run it: `t2iverw review` in a subprocess, driven by a real headless chromium.

The app launcher (`start_served`) and the browser fixtures live in tests/conftest.py, shared
with the search page's tests. The browser is Debian's `chromium` (installed by `.ci/run` with apt-get) launched by
Playwright through `executable_path`: no browser is downloaded by a test framework.
Without chromium the browser tests skip with the install command, except under
T2IVERW_REQUIRE_BROWSER=1 (set by CI), where they fail instead.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from pathlib import Path

import pytest

from t2iverw.build import BuildDir
from t2iverw.caption.run import run_captions
from t2iverw.demo import write_truth_parts


@pytest.fixture
def start_app(start_served):
    """Start `t2iverw review BUILD` apps; every one still running is stopped at the end."""
    return lambda build, *args: start_served("review", str(build), "--port", "0", *args)


@pytest.fixture
def review_build(build_dir) -> Path:
    """The conftest build with template captions and the sample's true part masks."""
    run_captions(build_dir, backend="template", progress=False)
    write_truth_parts(BuildDir.open(build_dir))
    return build_dir


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
