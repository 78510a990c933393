"""SAM3 (transformers' `Sam3Model`) turned into six binary part masks per image.

SAM3's vision encoder dominates its cost, and the model card runs it again for every
text prompt. `PartSegmenter.segment` runs it once per image and decodes every prompt of
every category against those features in one batched forward (the features are
repeated along the prompt axis); the text features of the fixed prompt set are computed
once at load. `segment_per_prompt` is the model card's loop, kept as the reference the
shared-encoder path is tested and benchmarked against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from t2iverw.errors import T2IError
from t2iverw.segment.prompts import PartPrompts

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
GATED_HINT = (
    "facebook/sam3 is gated: accept its terms on https://huggingface.co/facebook/sam3 and run `hf auth login`, "
    "or pass --model DIR holding a local copy (config.json, weights, processor files)"
)


@dataclass
class PartMasks:
    """One image's result: bool masks (n_parts, H, W) at the original size, best kept score and instance count per part."""

    masks: np.ndarray
    scores: list[float]
    instances: list[int]


def pick_device(device: str | None = None, dtype: str | None = None) -> tuple[torch.device, torch.dtype]:
    """The requested device/dtype, defaulting to CUDA + bf16 when present and CPU + fp32 otherwise."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise T2IError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    name = dtype or ("bf16" if dev.type == "cuda" else "fp32")
    if name not in DTYPES:
        raise T2IError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return dev, DTYPES[name]


def load_segmenter(
    model_id: str, parts: list[PartPrompts], *, device: str | None = None, dtype: str | None = None
) -> PartSegmenter:
    """Load `Sam3Model` + `Sam3Processor` from a hub id or directory; unloadable weights are a T2IError."""
    from transformers import Sam3Model, Sam3Processor

    dev, torch_dtype = pick_device(device, dtype)
    if model_id.startswith(("/", ".", "~")) and not Path(model_id).expanduser().is_dir():
        raise T2IError(f"cannot load SAM3 from {model_id!r}: no such directory; {GATED_HINT}")
    try:
        processor = Sam3Processor.from_pretrained(model_id)
        model = Sam3Model.from_pretrained(model_id, dtype=torch_dtype)
    except (OSError, ValueError) as err:
        reason = str(err).strip().split(". ")[0] or type(err).__name__
        raise T2IError(f"cannot load SAM3 from {model_id!r} ({reason}); {GATED_HINT}") from err
    return PartSegmenter(model.to(dev).eval(), processor, parts)


class PartSegmenter:
    def __init__(self, model, processor, parts: list[PartPrompts]):
        self.model = model
        self.processor = processor
        self.parts = parts
        self.prompts = [p for part in parts for p in part.prompts]
        self.prompt_part = [i for i, part in enumerate(parts) for _ in part.prompts]
        self.thresholds = [part.threshold for part in parts]
        text = processor(text=self.prompts, return_tensors="pt")
        self.input_ids = text["input_ids"].to(self.device)
        self.attention_mask = text["attention_mask"].to(self.device)
        with torch.inference_mode():
            self.text_features = model.get_text_features(input_ids=self.input_ids, attention_mask=self.attention_mask)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, self.model.dtype)

    @torch.inference_mode()
    def segment(self, images: list[Image.Image]) -> list[PartMasks]:
        """Part masks of a batch of images: one vision pass per image, all prompts decoded in one forward."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        n_img, n_prompt = len(images), len(self.prompts)
        vision = self.model.get_vision_features(pixel_values=self._pixels(images))
        per_prompt = Sam3VisionEncoderOutput(
            fpn_hidden_states=tuple(h.repeat_interleave(n_prompt, dim=0) for h in vision.fpn_hidden_states),
            fpn_position_encoding=tuple(p.repeat_interleave(n_prompt, dim=0) for p in vision.fpn_position_encoding),
        )
        text = BaseModelOutputWithPooling(pooler_output=self.text_features.pooler_output.repeat(n_img, 1, 1))
        out = self.model(
            vision_embeds=per_prompt, text_embeds=text, attention_mask=self.attention_mask.repeat(n_img, 1)
        )
        sizes = [img.size[::-1] for img in images for _ in range(n_prompt)]
        rows = self._instances(out, sizes)
        return [self._union(rows[i * n_prompt : (i + 1) * n_prompt], images[i]) for i in range(n_img)]

    @torch.inference_mode()
    def segment_per_prompt(self, images: list[Image.Image]) -> list[PartMasks]:
        """The model card's way: a full forward (vision encoder included) per image and prompt."""
        results = []
        for image in images:
            pixels = self._pixels([image])
            rows = []
            for p in range(len(self.prompts)):
                out = self.model(
                    pixel_values=pixels,
                    input_ids=self.input_ids[p : p + 1],
                    attention_mask=self.attention_mask[p : p + 1],
                )
                rows += self._instances(out, [image.size[::-1]])
            results.append(self._union(rows, image))
        return results

    def _instances(self, out, sizes: list[tuple[int, int]]) -> list[dict]:
        # The loosest category threshold here; each category's own is applied in _union.
        return self.processor.post_process_instance_segmentation(out, threshold=min(self.thresholds), target_sizes=sizes)

    def _union(self, rows: list[dict], image: Image.Image) -> PartMasks:
        """Union, per category, of its prompts' instances scoring above the category threshold."""
        w, h = image.size
        masks = torch.zeros(len(self.parts), h, w, dtype=torch.bool, device=self.device)
        scores = [0.0] * len(self.parts)
        counts = [0] * len(self.parts)
        for row, part in zip(rows, self.prompt_part):
            keep = row["scores"] > self.thresholds[part]
            if not keep.any():
                continue
            masks[part] |= row["masks"][keep].bool().any(dim=0)
            scores[part] = max(scores[part], float(row["scores"][keep].max()))
            counts[part] += int(keep.sum())
        return PartMasks(masks=masks.cpu().numpy(), scores=scores, instances=counts)
