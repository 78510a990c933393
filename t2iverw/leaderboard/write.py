"""Measured runs + the paper's published rows -> DIR/LEADERBOARD.md, DIR/leaderboard.html, DIR/leaderboard.png.

Measured rows are scored by `t2iverw.evaluation.compare` (intervals and Holm-corrected
paired tests over the same queries), so the leaderboard and `t2iverw compare` never
disagree. Every value read from a run is escaped: in the HTML by Jinja's autoescape, in
the Markdown by `md_cell`.
"""

from __future__ import annotations

import base64
import html
import importlib.resources
import io
import json
from dataclasses import dataclass
from pathlib import Path

import jinja2

from t2iverw.errors import T2IError
from t2iverw.evaluation.compare import (METRICS, compare_systems, load_systems, prediction_file, significant_pairs,
                                        unit_groups)
from t2iverw.fingerprints import dataset_fingerprint
from t2iverw.leaderboard.published import PUBLISHED_NOTE, published_tables
from t2iverw.storage import atomic_path, write_text

MISSING = "—"
SUMMARY = "summary.json"
ALPHA = 0.05


@dataclass(frozen=True)
class Run:
    """What a run directory says about itself (summary.json, run.json, ranks.json's meta); None where absent."""

    name: str
    path: Path
    model: str | None
    config: str | None
    config_fingerprint: str | None
    dataset_fingerprint: str | None
    selection: str | None
    selected_on_test: bool
    parameters: int | None
    train_seconds: float | None
    hardware: str | None


def read_run(path: Path, name: str) -> Run:
    """A run's description; runs written before summary.json had the new keys show them as missing."""
    ranks = prediction_file(path)
    folder = path if path.is_dir() else ranks.parent
    summary = _json(folder / SUMMARY)
    info = _json(folder / "run.json")
    meta = _meta(ranks)

    def pick(key: str) -> object:
        return next((d[key] for d in (summary, meta, info) if d.get(key) is not None), None)

    selection = pick("selection")
    on_test = bool(pick("selected_on_test")) or selection == "test"
    return Run(name, folder, pick("model"), pick("config"), pick("config_fingerprint"), pick("dataset_fingerprint"),
               selection, on_test, pick("parameters"), pick("train_seconds"), pick("hardware"))


def _json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as exc:
        raise T2IError(f"cannot read {path}: {exc}") from None
    return data if isinstance(data, dict) else {}


def _meta(ranks: Path) -> dict:
    if ranks.suffix != ".json":
        return {}
    data = _json(ranks)
    return data.get("meta", {}) if set(data) == {"meta", "ranks"} and isinstance(data.get("meta"), dict) else {}


def run_names(paths: list[Path]) -> list[str]:
    """Each run's directory name, numbered where two share one."""
    folders = [p if p.is_dir() else p.parent for p in paths]
    base = [f.name or f.resolve().name for f in folders]  # as given (a link keeps its name); "." by its real one
    return [b if base.count(b) == 1 else f"{b} ({base[:i + 1].count(b)})" for i, b in enumerate(base)]


def write_leaderboard(runs: list[Path], dataset: Path | None, out: Path, *, ci: float = 95.0, unit: str = "identity",
                      resamples: int = 10_000, seed: int = 0) -> list[str]:
    """Write the three files; returns the lines the command prints."""
    out = Path(out)
    if runs and dataset is None:
        raise T2IError("measured runs need the dataset their ranks.json are scored on: give --dataset DS")
    measured, result, fingerprints = [], None, set()
    if runs:
        names = run_names(runs)
        measured = [read_run(Path(p), n) for p, n in zip(runs, names)]
        truth, systems = load_systems(dataset, [(r.name, r.path) for r in measured])
        result = compare_systems(systems, unit_groups(truth, unit), ci=ci, resamples=resamples, unit=unit, seed=seed)
        fingerprints = {dataset_fingerprint(dataset, split) for split in (None, "train", "test")}  # any a run may record
    out.mkdir(parents=True, exist_ok=True)
    rows = [_row(r, result["systems"][r.name], fingerprints) for r in measured]
    context = {
        "dataset": str(dataset) if dataset else None,
        "dataset_fingerprint": dataset_fingerprint(dataset) if dataset else None,  # of the whole export
        "rows": rows, "metrics": METRICS, "significance": significance_line(result, unit),
        "published": published_tables(), "published_note": PUBLISHED_NOTE,
        "ci": ci, "unit": unit, "resamples": resamples,
    }
    png = bar_chart(rows, context["published"], ci)
    with atomic_path(out / "leaderboard.png") as tmp:
        tmp.write_bytes(png)
    chart = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    write_text(out / "leaderboard.html", _template().render(**context, chart=chart, missing=MISSING))
    write_text(out / "LEADERBOARD.md", markdown(context))
    return [f"leaderboard of {len(rows)} measured runs and {sum(len(t['rows']) for t in context['published'])} "
            f"published rows", f"open {out / 'leaderboard.html'}"]


def _row(run: Run, metrics: dict, fingerprints: set[str]) -> dict:
    cells = {"name": run.name, "model": run.model, "config": run.config, "config_fingerprint": run.config_fingerprint,
             "dataset_fingerprint": run.dataset_fingerprint, "selection": run.selection,
             "selected_on_test": run.selected_on_test, "parameters": _count(run.parameters),
             "train_time": _duration(run.train_seconds), "hardware": run.hardware,
             "fingerprint_differs": run.dataset_fingerprint is not None and run.dataset_fingerprint not in fingerprints}
    cells = {k: (MISSING if v is None else v) for k, v in cells.items()}
    for m in METRICS:
        value, bounds = metrics.get(m), metrics.get(f"{m}_ci")
        cells[m] = metrics.get(m)
        cells[f"{m}_ci"] = bounds
        cells[f"{m}_value"] = MISSING if value is None else f"{value:.2f}"
        cells[f"{m}_interval"] = f"[{bounds[0]:.2f}, {bounds[1]:.2f}]" if bounds else ""
        cells[f"{m}_text"] = f"{cells[f'{m}_value']} {cells[f'{m}_interval']}".strip()
    return cells


def _count(n: int | None) -> str | None:
    if n is None:
        return None
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n:,}"


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def significance_line(result: dict | None, unit: str) -> str:
    """Which measured rows differ significantly, from compare's Holm-corrected paired tests."""
    if result is None:
        return "No measured runs: the published rows alone."
    if len(result["systems"]) < 2:
        return "One measured run: nothing to compare it with."
    how = (f"paired randomisation test over {unit} units, Holm-corrected per metric, p_holm < {ALPHA:g}")
    found = significant_pairs(result, ALPHA)
    if not found:
        return f"No two measured runs differ significantly in R1 or mAP ({how})."
    parts = []
    for r in found:
        better, worse = (r["a"], r["b"]) if r["delta"] > 0 else (r["b"], r["a"])
        parts.append(f"{better} > {worse} in {r['metric']} ({abs(r['delta']):.2f} points, p_holm {r['p_holm']:.3g})")
    return f"Significant differences ({how}): " + "; ".join(parts) + "."


def bar_chart(rows: list[dict], published: list[dict], ci: float) -> bytes:
    """R1 and mAP bars per measured run with their intervals (the published T2I-VeRW rows when none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if rows:
        labels = [r["name"] for r in rows]
        series = {m: ([r[m] or 0.0 for r in rows], [r[f"{m}_ci"] for r in rows]) for m in ("R1", "mAP")}
        title = f"measured runs, {ci:g}% intervals"
    else:
        table = next(t for t in published if t["dataset"] == "T2I-VeRW")
        labels = [r["method"] for r in table["rows"]]
        series = {m: ([r[m] for r in table["rows"]], [None] * len(labels)) for m in ("R1", "mAP")}
        title = "T2I-VeRW, published (paper Table IV), not reproduced here"
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(labels) + 2), 3.8))
    for k, (metric, (values, bounds)) in enumerate(series.items()):
        errors = None
        if any(b is not None for b in bounds):
            errors = np.array([[v - b[0], b[1] - v] if b else [0.0, 0.0] for v, b in zip(values, bounds)]).T
        ax.bar(x + (k - 0.5) * 0.38, values, 0.38, yerr=errors, capsize=3, label=metric)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set(ylabel="%", title=title)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _template() -> jinja2.Template:
    text = (importlib.resources.files("t2iverw.leaderboard") / "leaderboard.html.j2").read_text(encoding="utf-8")
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(text)


def md_cell(value: object) -> str:
    """A Markdown table cell: HTML escaped (renderers pass raw HTML through), pipes and newlines neutralised."""
    return html.escape(str(value)).replace("|", "\\|").replace("\n", " ")


MEASURED_COLUMNS = ("name", "model", "config", "config_fingerprint", "dataset_fingerprint", "selection")
TAIL_COLUMNS = ("parameters", "train_time", "hardware")


def markdown(context: dict) -> str:
    lines = ["# T2I-VeRW leaderboard", ""]
    if context["rows"]:
        lines += [f"Measured on the test split of `{md_cell(context['dataset'])}` "
                  f"(dataset fingerprint `{context['dataset_fingerprint']}`), {context['ci']:g}% bootstrap "
                  f"intervals over {context['unit']} units ({context['resamples']} resamples).", ""]
        header = [*MEASURED_COLUMNS, *context["metrics"], *TAIL_COLUMNS]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in context["rows"]:
            cells = [md_cell(row[c]) for c in MEASURED_COLUMNS]
            if row["selected_on_test"]:
                cells[5] = f"**{cells[5] if cells[5] != MISSING else 'test'}** (selected on the TEST split)"
            if row["fingerprint_differs"] is True:
                cells[4] += " (differs from this dataset)"
            cells += [row[f"{m}_text"] for m in context["metrics"]] + [md_cell(row[c]) for c in TAIL_COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [context["significance"], "", "![R1 and mAP](leaderboard.png)", ""]
    for table in context["published"]:
        note = f"; {table['note']}" if table.get("note") else ""
        lines += [f"## {table['dataset']} (paper Table {table['table']}): published, not reproduced here", "",
                  f"{context['published_note']}{note}.", "",
                  "| Method | Venue | R1 | R5 | R10 | mAP |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['venue']} | {r['R1']} | {r['R5']} | {r['R10']} | {r['mAP']} |"
                  for r in table["rows"]]
        lines.append("")
    return "\n".join(lines)
