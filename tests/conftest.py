"""Shared fixtures: a synthetic VERI-Wild sample, a ready build directory, and an offline CLIP tokenizer.

Expensive things are session-scoped and copied into tmp_path by the function-scoped
fixtures, so a test that mutates its build never affects another.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Hermetic: no network to the hub, and load_dataset's cache outside the user's home.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="t2iverw-hf-datasets-"))

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


def _clip_bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip_torch is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


@pytest.fixture(scope="session")
def clip_tokenizer_dir(tmp_path_factory) -> Path:
    """A real CLIP BPE tokenizer (49,408 tokens) saved with save_pretrained, built offline.

    The vocabulary is derived from open_clip's bpe_simple_vocab_16e6.txt.gz exactly as
    CLIP's own SimpleTokenizer does: byte symbols, the same with '</w>', the merges,
    then the two special tokens.
    """
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    lines = gzip.open(_clip_bpe_path(), "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out = tmp_path_factory.mktemp("clip_tokenizer")
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges, model_max_length=77)
    tok.save_pretrained(out)
    return out
