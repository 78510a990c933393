"""The training loop: accelerate for devices / bf16 / multi-GPU, a checkpoint per epoch, resume.

A run directory holds everything `predict` needs (config.yaml, clip/ with the backbone
config and tokenizer, run.json, model.safetensors = the best epoch on validation) plus
metrics.jsonl (one record per finished epoch), curve.png and checkpoints/epoch-NNNN.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from t2iverw.baseline.config import Config
from t2iverw.baseline.data import TrainImages, load_export, split_train
from t2iverw.baseline.model import build_model, load_clip, save_random_clip
from t2iverw.baseline.retrieval import score_matrix
from t2iverw.evaluation import evaluate
from t2iverw.storage import JsonlWriter, atomic_path, read_jsonl, write_json, write_text

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
WEIGHTS = "model.safetensors"


def train(cfg: Config, dataset: str | Path, out: str | Path) -> Path:
    """Train PFCVR on the export at `dataset` into run directory `out`; resumes if `out` has checkpoints."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision if torch.cuda.is_available() else "no")
    set_seed(cfg.seed)
    splits = split_train(load_export(str(dataset))["train"], cfg.val_ratio, cfg.seed)

    clip, tokenizer = load_clip(_clip_source(cfg, out, accelerator), cfg.image_size)
    model = build_model(clip, tokenizer, cfg, len(splits.classes))
    if accelerator.is_main_process:
        _write_run_files(out, cfg, clip, tokenizer, splits.classes)

    patch = clip.config.vision_config.patch_size
    loader = DataLoader(
        TrainImages(splits.fit, splits.classes, tokenizer, cfg, patch),
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
    )
    optimizer = torch.optim.Adam(
        [
            {"params": model.backbone_parameters(), "lr": cfg.lr},
            {"params": model.new_parameters(), "lr": cfg.lr * cfg.new_module_lr_factor},
        ],
        weight_decay=cfg.weight_decay,
    )
    steps = len(loader)  # global batches per epoch: accelerate steps the scheduler once per process per step
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, cfg.warmup_epochs * steps, cfg.epochs * steps, cfg.warmup_factor)
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    start, best = _resume(accelerator, out)

    for epoch in range(start, cfg.epochs):
        model.train()
        sums: dict[str, float] = defaultdict(float)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not accelerator.is_local_main_process)
        for batch in bar:
            terms = model(batch)
            loss = sum(cfg.loss_weights[k] * v for k, v in terms.items())
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            for k, v in terms.items():
                sums[k] += v.item()
            sums["loss"] += loss.item()
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in terms.items()})
        record = {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[0], **{k: v / len(loader) for k, v in sums.items()}}
        if accelerator.is_main_process:
            record.update(_validate(accelerator.unwrap_model(model), splits.val, tokenizer, cfg, accelerator.device))
            # R1 first, mAP breaks ties (small validation sets tie often); without validation the last epoch wins
            score = record["val_r1"] + record["val_map"] / 1000 if "val_r1" in record else float(epoch)
            if score >= best:
                best = score
                _save_weights(accelerator.unwrap_model(model), out / WEIGHTS)
        accelerator.wait_for_everyone()
        _checkpoint(accelerator, out, record, best)
    if accelerator.is_main_process:
        plot_curve(out / METRICS, out / "curve.png")
    accelerator.end_training()
    return out


def warmup_cosine(step: int, warmup: int, total: int, start_factor: float) -> float:
    """LR multiplier: linear from `start_factor` to 1 over `warmup` steps, then cosine to 0."""
    if step < warmup:
        return start_factor + (1 - start_factor) * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _clip_source(cfg: Config, out: Path, accelerator) -> str:
    """The backbone to load: `cfg.clip`, or a random CLIP written once into the run when `random_clip` is set."""
    if cfg.random_clip is None:
        return cfg.clip
    init = out / "clip_init"
    if accelerator.is_main_process and not (init / "config.json").exists():
        tmp = out / "clip_init.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_random_clip(tmp, cfg.random_clip)
        tmp.rename(init)
    accelerator.wait_for_everyone()
    return str(init)


def _write_run_files(out: Path, cfg: Config, clip, tokenizer, classes: list[str]) -> None:
    write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    clip.config.save_pretrained(out / "clip")
    tokenizer.save_pretrained(out / "clip")
    write_json(out / "run.json", {"classes": classes})


def _validate(model, rows, tokenizer, cfg: Config, device) -> dict[str, float]:
    if len(rows) == 0:
        return {}
    scores, query_rows = score_matrix(model, rows, tokenizer, cfg.image_size, cfg.text_length, cfg.eval_batch_size, device)
    labels = rows["vehicle_id"]
    metrics = evaluate(scores, [labels[i] for i in query_rows], labels)
    return {"val_r1": float(metrics["R1"]), "val_map": float(metrics["mAP"])}


def _save_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def _checkpoint(accelerator, out: Path, record: dict, best: float) -> None:
    """Save the full training state for this epoch, then log its record; only the newest checkpoint is kept.

    The state goes to a temp folder renamed into place, so a kill mid-save leaves the
    previous checkpoint intact; the epoch's record is stored inside the checkpoint too,
    so a kill between the rename and the log line is repaired on resume.
    """
    root = out / CHECKPOINTS
    final = root / f"epoch-{record['epoch']:04d}"
    tmp = root / f"{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        write_json(tmp / "state.json", {"epoch": record["epoch"], "best": best, "record": record})
        tmp.rename(final)
        for old in root.glob("epoch-*"):
            if old != final and not old.name.endswith(".tmp"):
                shutil.rmtree(old)
        _log_once(out, record)
    accelerator.wait_for_everyone()


def _log_once(out: Path, record: dict) -> None:
    done = {r["epoch"] for r in read_jsonl(out / METRICS)} if (out / METRICS).exists() else set()
    if record["epoch"] not in done:
        with JsonlWriter(out / METRICS) as log:
            log.write(record)


def _resume(accelerator, out: Path) -> tuple[int, float]:
    """(first epoch to run, best validation score so far) from the newest complete checkpoint."""
    done = sorted(p for p in (out / CHECKPOINTS).glob("epoch-*") if not p.name.endswith(".tmp"))
    if not done:
        return 0, float("-inf")
    accelerator.load_state(str(done[-1]))
    state = json.loads((done[-1] / "state.json").read_text())
    if accelerator.is_main_process:
        _log_once(out, state["record"])
    accelerator.print(f"resuming after epoch {state['epoch']} from {done[-1]}")
    return state["epoch"], state["best"]


def plot_curve(metrics_path: Path, png: Path) -> None:
    """Per-epoch loss terms and validation R1/mAP, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(read_jsonl(metrics_path))
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("loss", "sdm", "id", "part_itc", "mlm", "mim"):
        if key in records[0]:
            ax_loss.plot(epochs, [r[key] for r in records], label=key)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training losses")
    ax_loss.legend()
    for key in ("val_r1", "val_map"):
        if key in records[0]:
            ax_val.plot(epochs, [r[key] for r in records], label=key)
    ax_val.set(xlabel="epoch", ylabel="%", title="validation (held-out train identities)")
    if "val_r1" in records[0]:
        ax_val.legend()
    else:
        ax_val.text(0.5, 0.5, "no validation split (val_ratio: 0):\nthe last epoch is kept", ha="center",
                    va="center", transform=ax_val.transAxes)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
