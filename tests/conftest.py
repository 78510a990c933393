"""Shared fixtures: a synthetic VERI-Wild sample, a ready build directory, and an offline CLIP tokenizer.

Expensive things are session-scoped and copied into tmp_path by the function-scoped
fixtures, so a test that mutates its build never affects another.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

from t2iverw.constants import PARTS

# Hermetic: no network to the hub, and load_dataset's cache outside the user's home.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="t2iverw-hf-datasets-"))

ROOT = Path(__file__).resolve().parents[1]
SYNTH_IDS = 12
SYNTH_PER_ID = (3, 6)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic VERI-Wild root (read-only by convention: copy before mutating)."""
    from t2iverw.synth import write_sample

    root = tmp_path_factory.mktemp("synth")
    write_sample(root, ids=SYNTH_IDS, per_id=SYNTH_PER_ID, seed=0)
    return root


@pytest.fixture(scope="session")
def _indexed_split_build(synth_root, tmp_path_factory) -> Path:
    from t2iverw.index import build_index
    from t2iverw.split import make_split

    build = tmp_path_factory.mktemp("build")
    build_index(synth_root, build)
    make_split(build, test_ratio=0.3, seed=0)
    return build


@pytest.fixture
def build_dir(_indexed_split_build, tmp_path) -> Path:
    """A fresh copy of an indexed and split build directory of the synthetic sample."""
    dst = tmp_path / "build"
    shutil.copytree(_indexed_split_build, dst)
    return dst


@pytest.fixture(scope="session")
def clip_tokenizer_dir(tmp_path_factory) -> Path:
    """A real CLIP BPE tokenizer (49,408 tokens, open_clip's ids) built offline and saved with save_pretrained."""
    from t2iverw.clip_tokenizer import build_clip_tokenizer

    out = tmp_path_factory.mktemp("clip_tokenizer")
    build_clip_tokenizer(out)
    return out


# --- a tiny randomly initialised SAM3, saved like a real checkpoint ---------------------------
# It goes through save_pretrained/from_pretrained, so tests run the production loading path.
# Random weights score far below the shipped thresholds, so tests use a parts file with low
# thresholds and two prompts per part.
@pytest.fixture(scope="session")
def tiny_sam3_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import Sam3Model

    from t2iverw.segment.tiny import TINY_IMAGE, sam3_processor, tiny_sam3_config

    out = tmp_path_factory.mktemp("tiny_sam3")
    torch.manual_seed(0)
    Sam3Model(tiny_sam3_config()).save_pretrained(out)
    sam3_processor(TINY_IMAGE).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def low_parts_file(tmp_path_factory) -> Path:
    """Two prompts per part and thresholds random weights clear now and then."""
    cats = [
        {"name": p, "text": f"Car {p}", "threshold": 0.251, "prompts": [f"car {p}", f"vehicle {p}"]} for p in PARTS
    ]
    path = tmp_path_factory.mktemp("parts") / "parts.yaml"
    path.write_text(yaml.safe_dump({"categories": cats}))
    return path


@pytest.fixture(scope="session")
def segmenter(tiny_sam3_dir, low_parts_file):
    from t2iverw.segment.model import load_segmenter
    from t2iverw.segment.prompts import load_parts

    return load_segmenter(str(tiny_sam3_dir), load_parts(low_parts_file), device="cpu")


# --- Ray pipelines (pipelines/ray_*.py) on one local Ray instance ------------------------------
@pytest.fixture(scope="session")
def local_ray():
    """A local Ray instance with 2 CPUs, started once for every Ray test."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_launcher():
    """The click `main` of pipelines/<name>.py, loaded from its file (the pipelines are scripts, not a package)."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"pipelines_{name}", ROOT / "pipelines" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.main

    return load


START_TIMEOUT = 90.0


class ServedApp:
    """One served `t2iverw COMMAND ...` process (review, search --serve); its URL is read from what it prints."""

    def __init__(self, *args: str):
        cmd = [sys.executable, "-m", "t2iverw.cli", *args]
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
                raise AssertionError(f"app did not start: {''.join(self.output)}") from None
            if line is None:
                raise AssertionError(f"app exited: {''.join(self.output)}")
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
def start_served():
    """Start served `t2iverw ...` apps (ServedApp); every one still running is stopped at the end."""
    apps: list[ServedApp] = []

    def start(*args: str) -> ServedApp:
        app = ServedApp(*args)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop()


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
