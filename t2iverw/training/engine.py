"""The training loop: accelerate for devices / bf16 / several processes, a checkpoint per epoch, resume.

A run directory holds everything `predict` needs (config.yaml, backbone/ with the
backbone config and tokenizer, run.json, model.safetensors = the selected epoch) plus
metrics.jsonl (one record per finished epoch), summary.json (which epoch was kept and
how), curve.png and checkpoints/epoch-NNNN.

`batch_size` is the global batch: under `accelerate launch` each process takes its
slice of every batch (accelerate's split_batches), SDM is computed over the gathered
global batch, and the schedule steps once per global batch, so N processes follow the
single-process run.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from t2iverw import models
from t2iverw.fingerprints import config_fingerprint, dataset_fingerprint
from t2iverw.training.config import Config
from t2iverw.training.data import (COLUMNS, COPY_COLUMNS, TrainImages, check_copies, check_part_grids, collate,
                                  load_split, loader_options, split_train)
from t2iverw.training.optim import lr_factor, param_groups
from t2iverw.training.sampler import IdentitySampler
from t2iverw.training.retrieval import encode, score_matrix
from t2iverw.errors import T2IError
from t2iverw.evaluation import evaluate
from t2iverw.storage import JsonlWriter, atomic_path, read_jsonl, write_json, write_text

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
WEIGHTS = "model.safetensors"
BACKBONE = "backbone"  # what RetrievalModel.save_run_files writes and from_run reads
EVAL_COLUMNS = ["image", "image_id", "vehicle_id", "caption_id", "caption", "captions"]
TEST_WARNING = "model selected on the test split (selection: test, the authors' protocol): test numbers are optimistic"


def make_accelerator(cfg: Config):
    """The Accelerator every process of a run uses: bf16 autocast on CUDA only, global batches split over processes."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    precision = cfg.mixed_precision if torch.cuda.is_available() else "no"
    accelerator = Accelerator(mixed_precision=precision, dataloader_config=DataLoaderConfiguration(split_batches=True))
    if cfg.batch_size % accelerator.num_processes:
        raise T2IError(f"batch_size {cfg.batch_size} (the global batch) is not divisible by the "
                       f"{accelerator.num_processes} processes")
    return accelerator


def train_loader(data: TrainImages, cfg: Config) -> DataLoader:
    """Random batches, or P identities x K pairs a batch (`sampler: identity`, IVT's; sampler.py)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    order = {"shuffle": True}
    if cfg.sampler == "identity":
        order = {"sampler": IdentitySampler(data.labels(), cfg.batch_size, cfg.num_instance)}
    return DataLoader(data, batch_size=cfg.batch_size, collate_fn=collate, **order,
                      **loader_options(cfg.num_workers, device))


def make_optimizer(model, cfg: Config) -> torch.optim.Optimizer:
    """Adam with the released groups (optim.rate), betas and epsilon, in the fused kernel (the same
    update, in one pass); or SGD with momentum over the same groups (`optimizer: sgd`, IVT's solver)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.Adam(param_groups(model, cfg), betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, fused=True)


def train(cfg: Config, dataset: str | Path, out: str | Path, cache_dir: str | None = None) -> Path:
    """Train `cfg.model` on the export at `dataset` into run directory `out`; resumes if `out` has checkpoints."""
    import time

    from accelerate.utils import set_seed

    model_class = models.get(cfg.model)
    if not model_class.trainable:
        raise T2IError(f"model {cfg.model!r} is zero-shot and has nothing to train: "
                       f"`t2iverw predict --model {cfg.model} ...` ranks with it directly")
    started = time.perf_counter()

    out = Path(out)
    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed)
    copies = COPY_COLUMNS if cfg.aug and cfg.aug_source == "release" else []
    train_rows = load_split(dataset, "train", COLUMNS, cache_dir, optional=copies)
    check_copies(train_rows, cfg)
    if "part_grid" in model_class.batch_needs(cfg):
        check_part_grids(train_rows, cfg)
    out.mkdir(parents=True, exist_ok=True)
    splits = split_train(train_rows, cfg.val_ratio, cfg.seed)
    test = load_split(dataset, "test", EVAL_COLUMNS, cache_dir) if cfg.selection == "test" else None

    if accelerator.is_main_process:
        model_class.prepare(cfg, out)
    accelerator.wait_for_everyone()
    model, tokenizer = model_class.build(cfg, len(splits.classes), out)
    if accelerator.is_main_process:
        _write_run_files(out, cfg, model, tokenizer, splits.classes)
    data = TrainImages(splits, tokenizer, cfg, getattr(model, "grid", 1), model_class.batch_needs(cfg),
                       model_class.image_mean, model_class.image_std,
                       model_class.train_texts if model_class.expands_texts() else None)
    loader = train_loader(data, cfg)
    optimizer = make_optimizer(model, cfg)
    steps = len(loader)  # global batches per epoch; with split_batches the scheduler steps once per global batch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps, cfg))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    start, best = _resume(accelerator, out)

    for epoch in range(start, cfg.epochs):
        model.train()
        sums: dict[str, float] = defaultdict(float)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not accelerator.is_local_main_process)
        for batch in bar:
            terms = model(batch)
            loss = sum(_weight(cfg, k) * v for k, v in terms.items())
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            values = dict(zip([*terms, "loss"], torch.stack([v.detach().float() for v in (*terms.values(), loss)]).tolist()))  # one device sync
            for k, v in values.items():
                sums[k] += v
            bar.set_postfix({k: f"{values[k]:.3f}" for k in terms})
        record = {"epoch": epoch + 1, "lr": cfg.lr * lr_factor(epoch * steps, steps, cfg),
                  **_mean_over_ranks(accelerator, sums, len(loader)), "selection": cfg.selection}
        if cfg.selection == "test":
            record |= {"selected_on_test": True, "warning": TEST_WARNING}
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            # evaluation draws from the RNG (each DataLoader pass takes a seed): fork it, so that what is
            # evaluated (val, test or nothing) never changes the training that follows, nor sets rank 0 apart
            with torch.random.fork_rng(devices=[accelerator.device] if accelerator.device.type == "cuda" else []):
                record.update(_retrieval(unwrapped, splits.val, tokenizer, cfg, accelerator.device, "val"))
                if test is not None:
                    record.update(_retrieval(unwrapped, test, tokenizer, cfg, accelerator.device, "test"))
            score = _selection_score(cfg, record)
            if is_better(cfg, score, best["score"]):
                best = {"score": score, "epoch": record["epoch"]}
                _save_weights(unwrapped, out / WEIGHTS)
        accelerator.wait_for_everyone()
        _checkpoint(accelerator, out, record, best)
    if accelerator.is_main_process:
        extra = {"dataset": str(dataset), "dataset_fingerprint": dataset_fingerprint(dataset),
                 "parameters": sum(p.numel() for p in accelerator.unwrap_model(model).parameters()),
                 "train_seconds": round(time.perf_counter() - started, 1),
                 "hardware": _hardware(accelerator)}
        _write_summary(out, cfg, accelerator.num_processes, best["epoch"], extra)
        plot_curve(out / METRICS, out / "curve.png")
    accelerator.end_training()
    return out


def _mean_over_ranks(accelerator, sums: dict[str, float], batches: int) -> dict[str, float]:
    """Per-batch means of the loss terms, averaged over the processes (each saw its own slices)."""
    keys = sorted(sums)
    values = torch.tensor([sums[k] / max(1, batches) for k in keys], device=accelerator.device)
    values = accelerator.reduce(values, reduction="mean")
    return dict(zip(keys, values.tolist()))


def _selection_score(cfg: Config, record: dict) -> float:
    """Higher is better. val: R1, mAP breaks ties; test: R1; with `selection_metric: R1+mAP` their
    mean on either split (IVT's rule); last: the epoch."""
    if cfg.selection == "last":
        return float(record["epoch"])
    r1, mAP = record[f"{cfg.selection}_r1"], record[f"{cfg.selection}_map"]
    if cfg.selection_metric == "R1+mAP":
        return 0.5 * (r1 + mAP)
    return r1 + mAP / 1000 if cfg.selection == "val" else r1


def is_better(cfg: Config, score: float, best: float) -> bool:
    """Whether an epoch's score replaces the best so far: a tie goes to the later epoch, except for
    test R1, where the released PFCVR code keeps the earlier one (strictly better only)."""
    strict = cfg.selection == "test" and cfg.selection_metric == "R1"
    return score > best or (score == best and not strict)


def _weight(cfg: Config, name: str) -> float:
    if name not in cfg.loss_weights:
        raise T2IError(f"model {cfg.model!r} returned loss {name!r}, which has no entry in loss_weights")
    return cfg.loss_weights[name]


def _hardware(accelerator) -> str:
    """What trained the run, e.g. 'cpu x2' or 'cuda NVIDIA H100 80GB HBM3 x8' (this session's resumed part)."""
    device = accelerator.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return " ".join(filter(None, [device.type, name, f"x{accelerator.num_processes}"]))


def _write_run_files(out: Path, cfg: Config, model, tokenizer, classes: list[str]) -> None:
    write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    model.save_run_files(tokenizer, out / BACKBONE)
    write_json(out / "run.json", {"classes": classes, "model": cfg.model})


def _retrieval(model, rows, tokenizer, cfg: Config, device, prefix: str) -> dict[str, float]:
    """R1 and mAP of text-to-image retrieval on `rows` (every caption a query, every image in the gallery)."""
    if rows is None or len(rows) == 0:
        return {}
    enc = encode(model, rows, tokenizer, cfg.eval_batch_size, device)
    metrics = evaluate(score_matrix(enc), enc.query_labels, enc.gallery_labels)
    return {f"{prefix}_r1": float(metrics["R1"]), f"{prefix}_map": float(metrics["mAP"])}


def _save_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def _checkpoint(accelerator, out: Path, record: dict, best: dict) -> None:
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
    accelerator.wait_for_everyone()
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


def _resume(accelerator, out: Path) -> tuple[int, dict]:
    """(first epoch to run, best selection score and its epoch) from the newest complete checkpoint."""
    done = sorted(p for p in (out / CHECKPOINTS).glob("epoch-*") if not p.name.endswith(".tmp"))
    if not done:
        return 0, {"score": float("-inf"), "epoch": None}
    accelerator.load_state(str(done[-1]))
    state = json.loads((done[-1] / "state.json").read_text())
    if accelerator.is_main_process:
        _log_once(out, state["record"])
    accelerator.print(f"resuming after epoch {state['epoch']} from {done[-1]}")
    return state["epoch"], state["best"]


def _write_summary(out: Path, cfg: Config, processes: int, selected_epoch: int | None, extra: dict) -> None:
    """summary.json: which model and config, on which data, which epoch model.safetensors holds, chosen how."""
    records = {r["epoch"]: r for r in read_jsonl(out / METRICS)}
    summary = {"model": cfg.model, "config": cfg.name, "config_fingerprint": config_fingerprint(cfg.to_dict()),
               **extra, "selection": cfg.selection, "selected_on_test": cfg.selection == "test",
               "selected_epoch": selected_epoch, "epochs": cfg.epochs, "processes": processes,
               "global_batch": cfg.batch_size, "selected": records.get(selected_epoch, {})}
    if cfg.selection == "test":
        summary["warning"] = TEST_WARNING
    write_json(out / SUMMARY, summary)


def plot_curve(metrics_path: Path, png: Path) -> None:
    """Per-epoch loss terms and held-out R1/mAP, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(read_jsonl(metrics_path))
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 4))
    skip = {"epoch", "lr", "selection", "selected_on_test", "warning"}
    for key in [k for k, v in records[0].items()
                if k not in skip and isinstance(v, float) and not k.startswith(("val_", "test_"))]:
        ax_loss.plot(epochs, [r[key] for r in records], label=key)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training losses")
    ax_loss.legend()
    shown = [k for k in ("val_r1", "val_map", "test_r1", "test_map") if k in records[0]]
    for key in shown:
        ax_val.plot(epochs, [r[key] for r in records], label=key)
    title = "selection on the TEST split" if "test_r1" in shown else "validation (held-out train identities)"
    ax_val.set(xlabel="epoch", ylabel="%", title=title)
    if shown:
        ax_val.legend()
    else:
        ax_val.text(0.5, 0.5, "no validation split (val_ratio: 0):\nthe last epoch is kept", ha="center",
                    va="center", transform=ax_val.transAxes)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
