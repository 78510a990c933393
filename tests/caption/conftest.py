"""Tiny Qwen3-VL checkpoints, served by a real `transformers serve`, and builds to caption.

The model is built from a tiny `Qwen3VLConfig` and saved like a hub checkpoint: a
byte-level BPE tokenizer trained offline with `tokenizers` (Qwen's special tokens, a
minimal Qwen-style chat template) and an image processor that keeps crops to a few
patches, so CPU generation takes milliseconds. With random weights its text is
garbage that never ends, which exercises the cut-off handling; a second checkpoint
of the same model has its weights set so that it always answers one sentence and
stops, which exercises the path of a usable caption.
"""

from __future__ import annotations

import os
import shutil
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
            num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=2048,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2], "mrope_interleaved": True},
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
