"""Shared fixtures: a synthetic VERI-Wild sample, a ready build directory, and an offline CLIP tokenizer.

Expensive things are session-scoped and copied into tmp_path by the function-scoped
fixtures, so a test that mutates its build never affects another.
"""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def clip_tokenizer_dir(tmp_path_factory) -> Path:
    """A real CLIP BPE tokenizer (49,408 tokens, open_clip's ids) built offline and saved with save_pretrained."""
    from t2iverw.clip_tokenizer import build_clip_tokenizer

    out = tmp_path_factory.mktemp("clip_tokenizer")
    build_clip_tokenizer(out)
    return out
