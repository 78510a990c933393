"""A tiny SAM3: the real architecture at toy width, for CPU tests, benchmarks and smoke runs.

Random weights say nothing about mask quality, but they run every code path of the
stage (processor, shared-encoder decoding, post-processing) in milliseconds.
"""

from __future__ import annotations

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


def sam3_processor(image_size: int):
    """A Sam3Processor with CLIP's real BPE tokenizer (built offline) and an image processor of `image_size`."""
    from transformers import Sam3ImageProcessor, Sam3Processor

    from t2iverw.clip_tokenizer import build_clip_tokenizer

    return Sam3Processor(Sam3ImageProcessor(size={"height": image_size, "width": image_size}), build_clip_tokenizer())
