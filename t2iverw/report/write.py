"""`t2iverw report`: a dataset's splits, captions, parts and provenance as one HTML page with figures.

The tables are pandas frames (also written as CSV under `tables/`), the figures are
matplotlib PNGs, and `index.html` is rendered last from a Jinja template, so a killed
report never leaves an index that points at missing figures.
"""

from __future__ import annotations

import importlib.resources
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup

from t2iverw.errors import T2IError
from t2iverw.report import GALLERY, figures
from t2iverw.report.load import load_dataset
from t2iverw.report.stats import caption_stats, images_per_identity, part_stats, split_table
from t2iverw.report.truth import part_iou
from t2iverw.storage import atomic_path, write_text




@dataclass
class ReportSummary:
    out: Path
    kind: str
    images: int
    figures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def index(self) -> Path:
        return self.out / "index.html"

    def lines(self) -> list[str]:
        return [f"report of a {self.kind} with {self.images} images: {len(self.figures)} figures in {self.seconds:.1f}s",
                f"open {self.index}"]


def write_report(source: str | Path, out: str | Path, *, truth: str | Path | None = None,
                 gallery: int = GALLERY, seed: int = 0, source_root: str | Path | None = None) -> ReportSummary:
    """Write OUT/index.html, OUT/*.png and OUT/tables/*.csv for a build directory or an export
    (`source_root`: where a build's images are mounted, if not where `index` saw them)."""
    start = time.perf_counter()
    out = Path(out)
    data = load_dataset(source, source_root)
    if out.resolve() == data.root.resolve():
        raise T2IError(f"--out {out} is the dataset itself; choose another directory")
    out.mkdir(parents=True, exist_ok=True)

    splits = split_table(data.frame)
    captions = caption_stats(data.frame)
    parts = part_stats(data)
    iou = part_iou(data, truth) if truth is not None else None
    figs = {
        "identities": figures.identities_histogram(images_per_identity(data.frame), out),
        "lengths": figures.caption_lengths(captions, out),
        "coverage": figures.bar_chart(captions.coverage["attribute"].tolist(),
                                      captions.coverage["share of captions"].fillna(0).tolist(),
                                      "Attributes mentioned", "share of captions", out, "attributes.png", share=True),
        "flags": figures.bar_chart(captions.flags["flag"].tolist(), captions.flags["captions"].tolist(),
                                   "QA flags", "captions", out, "flags.png"),
        "parts": figures.parts_chart(parts, out),
    }
    heat = figures.heatmaps(parts, out)
    figs["heatmaps"], heat_parts = heat[0], heat[1:]
    if iou is not None:
        figs["iou"] = figures.iou_chart(iou, out)
    figs["gallery"] = figures.gallery(data, out, gallery, seed) if gallery else None

    tables = {"splits": splits, "coverage": captions.coverage, "agreement": captions.agreement,
              "flags": captions.flags, "most_flagged": captions.most_flagged, "parts": parts.table,
              **({"iou": iou} if iou is not None else {}),
              **{f"provenance_{k}": v for k, v in data.provenance.items() if isinstance(v, pd.DataFrame)}}
    for name, table in tables.items():
        with atomic_path(out / "tables" / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False)

    html = _template().render(
        data=data, captions=captions, parts=parts, figs=figs, heat_parts=heat_parts,
        tables={name: _html_table(name, table) for name, table in tables.items()},
        card=data.provenance.get("card", ""), gallery_count=gallery, truth=truth,
        num=_num, pct=_pct,
    )
    write_text(out / "index.html", html)
    names = [f for f in [*figs.values(), *heat_parts] if f]
    return ReportSummary(out, data.kind, len(data.frame), names, time.perf_counter() - start)


def _template() -> jinja2.Template:
    text = (importlib.resources.files("t2iverw.report") / "index.html.j2").read_text(encoding="utf-8")
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(text)


# columns holding shares in [0, 1], shown as percentages; other floats get 3 decimals
SHARES = {"share of captions", "agrees", "contradicts", "not mentioned", "metadata not in vocabulary",
          "present (grid)", "present (mask)", "mean grid area", "mean mask area", "pixel IoU", "grid IoU"}


def _html_table(name: str, table: pd.DataFrame) -> Markup:
    shown = table.copy()
    for col in shown.columns:
        if col in SHARES:
            shown[col] = shown[col].map(_pct)
        elif pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(_num)
    html = shown.to_html(index=False, border=0, table_id=f"table-{name.replace('_', '-')}", na_rep="-",
                         classes="data", escape=True)
    return Markup(html)


def _num(x: float, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"
