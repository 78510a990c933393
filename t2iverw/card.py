"""The dataset card (README.md) of an export, rendered from annotations/dataset_card.md.

huggingface_hub renders the YAML header from `DatasetCardData`, so the `configs`,
`dataset_info` and licence fields are exactly what the Hub and `load_dataset` parse.
"""

from __future__ import annotations

import html
import importlib.resources
from pathlib import Path

from datasets import DatasetInfo, Features, SplitInfo
from datasets.splits import SplitDict
from huggingface_hub import DatasetCard, DatasetCardData

from t2iverw.constants import PARTS
from t2iverw.schema import DESCRIPTIONS, type_string


def write_card(path: Path, feats: Features, summary, sizes: dict[str, int], split: dict,
               provenance: dict[str, list[dict]], min_cover: list[tuple[str, int]]) -> None:
    """`provenance`: captions/parts -> export.settings_groups; `min_cover`: the parts' grid.min_cover values, counted."""
    total = sum(summary.rows.values())
    data = DatasetCardData(
        license="other",
        license_name="veri-wild",
        license_link="https://github.com/PKU-IMRE/VERI-Wild",
        pretty_name="T2I-VeRW",
        task_categories=["text-retrieval", "image-feature-extraction"],
        tags=["vehicle-re-identification", "text-to-image-retrieval", "part-segmentation"],
        size_categories=[_size_category(total)],
        source_datasets=["VERI-Wild"],
        configs=[{"config_name": "default",
                  "data_files": [{"split": s, "path": f"data/{s}-*"} for s in summary.rows]}],
        dataset_info=dataset_info(feats, summary.rows, sizes)._to_yaml_dict(),
    )
    template = importlib.resources.files("t2iverw.annotations") / "dataset_card.md"
    template_str = template.read_text(encoding="utf-8")
    card = DatasetCard.from_template(
        data,
        template_str=template_str,
        settings_text=settings_text,
        summary=summary,
        split=split,
        columns=[(name, type_string(feats[name]), DESCRIPTIONS[name]) for name in feats],
        parts=PARTS,
        grid=summary.grid,
        min_cover=min_cover,
        provenance=provenance,
    )
    card.save(path)


def dataset_info(feats: Features, rows: dict[str, int], sizes: dict[str, int]) -> DatasetInfo:
    """The DatasetInfo (features + split sizes) that the card's YAML declares."""
    splits = SplitDict()
    for name, n in rows.items():
        splits.add(SplitInfo(name=name, num_examples=n, num_bytes=sizes[name]))
    return DatasetInfo(features=feats, splits=splits)


def settings_text(settings: dict) -> str:
    """`key=value` pairs of a settings dict on one line (nested dicts dotted), for the card.

    HTML-escaped: settings hold names from outside (a served model's id, a reviewer's name), and
    Markdown renderers pass raw HTML through.
    """
    def flat(d: dict, prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            out += flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}={v}"]
        return out
    return html.escape(", ".join(flat(settings))).replace("\n", " ") or "none recorded"


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"
