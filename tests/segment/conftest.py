"""A tiny randomly initialised SAM3 saved like a real checkpoint, and a build to segment.

The model and processor go through `save_pretrained`/`from_pretrained`, so the tests run
the production loading path. Random weights score far below the shipped thresholds, so
the tests use a parts file with low thresholds and two prompts per part.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from t2iverw.constants import PARTS
from t2iverw.segment.tiny import TINY_IMAGE, sam3_processor, tiny_sam3_config

@pytest.fixture(scope="session")
def tiny_sam3_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import Sam3Model

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
