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

TINY_IMAGE = 112  # 8x8 patches of 14 pixels


def tiny_sam3_config():
    from transformers import Sam3Config

    def block(**kw):
        return dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, **kw)

    return Sam3Config(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam3_vit_model", num_hidden_layers=2, image_size=TINY_IMAGE, patch_size=14,
                window_size=4, global_attn_indexes=[1], pretrain_image_size=TINY_IMAGE, **block(),
            ),
            fpn_hidden_size=32,
            backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
        ),
        text_config=dict(vocab_size=49408, projection_dim=32, num_hidden_layers=1, max_position_embeddings=32, **block()),
        geometry_encoder_config=block(num_layers=1),
        detr_encoder_config=block(num_layers=1),
        detr_decoder_config=block(num_layers=1, num_queries=8),
        mask_decoder_config=dict(hidden_size=32, num_attention_heads=2),
    )


@pytest.fixture(scope="session")
def tiny_sam3_dir(clip_tokenizer_dir, tmp_path_factory) -> Path:
    import torch
    from transformers import AutoTokenizer, Sam3ImageProcessor, Sam3Model, Sam3Processor

    out = tmp_path_factory.mktemp("tiny_sam3")
    torch.manual_seed(0)
    Sam3Model(tiny_sam3_config()).save_pretrained(out)
    image_processor = Sam3ImageProcessor(size={"height": TINY_IMAGE, "width": TINY_IMAGE})
    Sam3Processor(image_processor, AutoTokenizer.from_pretrained(clip_tokenizer_dir)).save_pretrained(out)
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
