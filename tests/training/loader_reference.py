"""The loader's output for a fixed seed on a small fixed dataset, kept to prove a rewrite of
`TrainImages` yields the same tensors (pixels, masks, tokens) as the code that produced it.

`python tests/training/loader_reference.py` rewrites tests/training/fixtures/loader_reference.pt;
it was generated once by the loader of commit f747e4d (before the decode-once rewrite).
The dataset is built here from seeded numpy arrays (lossless PNG), so it does not depend on
the synthesiser or the exporter.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FIXTURE = Path(__file__).parent / "fixtures" / "loader_reference.pt"
# the tiny config, and its aug variant: copies generated here, pad + crop + erasing on
CONFIGS = {"tiny": {"aug_source": "generated"},
           "tiny-aug": {"aug": True, "aug_source": "generated", "aug_grouping": "batch", "geometric_aug": True}}


def reference_split():
    """Six images of three identities, 40x56 random pixels, 1-3 captions (one empty), grids on some rows."""
    import datasets

    from t2iverw.constants import PARTS
    from t2iverw.training.data import split_train

    rng = np.random.default_rng(7)
    rows: dict[str, list] = {k: [] for k in ("image", "image_id", "vehicle_id", "caption_id", "caption", "captions",
                                            "part_grid", "mim_seed")}
    captions = [["a red sedan with a sunroof"], ["a blue suv", "a dark blue suv on a road", ""],
                ["a white truck"], ["a black hatchback", "a small black car"], ["a grey van"], ["a green pickup"]]
    for i, caps in enumerate(captions):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(buf, format="PNG")
        rows["image"].append({"bytes": buf.getvalue(), "path": None})
        rows["image_id"].append(f"im{i}")
        rows["vehicle_id"].append(str(i // 2))
        rows["caption_id"].append(f"im{i}")
        rows["caption"].append(caps[0])
        rows["captions"].append(caps)
        rows["part_grid"].append((rng.random((len(PARTS), 24, 24)) < 0.3).tolist() if i % 3 else None)
        rows["mim_seed"].append((rng.random((24, 24)) < 0.4).tolist() if i % 2 else None)
    feats = datasets.Features({
        "image": datasets.Image(), "captions": datasets.List(datasets.Value("string")),
        "part_grid": datasets.List(datasets.List(datasets.List(datasets.Value("bool")))),
        "mim_seed": datasets.List(datasets.List(datasets.Value("bool"))),
        **{k: datasets.Value("string") for k in ("image_id", "vehicle_id", "caption_id", "caption")}})
    return split_train(datasets.Dataset.from_dict(rows, features=feats), 0, 0)


def loader_output(tokenizer, overrides: dict) -> dict[str, torch.Tensor]:
    """Every sample of the split in order, seeded once, collated in batches of 3 items and concatenated."""
    from t2iverw.models.pfcvr import PFCVR
    from t2iverw.training.config import TINY_CONFIG, load_config
    from t2iverw.training.data import TrainImages, collate

    cfg = load_config(TINY_CONFIG, overrides)
    data = TrainImages(reference_split(), tokenizer, cfg, 8, PFCVR.batch_needs(cfg))
    torch.manual_seed(0)
    random.seed(0)
    batches = [collate([data[i] for i in range(a, min(a + 3, len(data)))]) for a in range(0, len(data), 3)]
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def offline_tokenizer(tmp: Path):
    from transformers import AutoTokenizer

    from t2iverw.clip_tokenizer import build_clip_tokenizer

    build_clip_tokenizer(tmp)
    tok = AutoTokenizer.from_pretrained(tmp)
    tok.add_special_tokens({"mask_token": "<|mask|>"})
    return tok


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tok = offline_tokenizer(Path(tmp))
        FIXTURE.parent.mkdir(exist_ok=True)
        torch.save({name: loader_output(tok, o) for name, o in CONFIGS.items()}, FIXTURE)
    print({name: {k: tuple(v.shape) for k, v in out.items()} for name, out in torch.load(FIXTURE).items()})
