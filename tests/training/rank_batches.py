"""Run under two processes: which training items each rank's loader yields, step by step.

It builds the loader exactly as `engine.train` does (make_accelerator, TrainImages,
train_loader, accelerator.prepare) and writes `rank<i>.json` (a list of item lists) to OUT.

    python -m torch.distributed.run --nproc_per_node 2 rank_batches.py EXPORT RUN OUT KEY=VALUE...
"""

import json
import sys
from pathlib import Path

import yaml
from transformers import AutoTokenizer

from t2iverw.models.base import NEEDS
from t2iverw.training.config import TINY_CONFIG, load_config
from t2iverw.training.data import TrainImages, load_split, split_train
from t2iverw.training.engine import make_accelerator, train_loader

ALL_NEEDS = frozenset(NEEDS)  # every optional field the loader makes

export, run, out = sys.argv[1:4]
cfg = load_config(TINY_CONFIG, {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in sys.argv[4:])})
accelerator = make_accelerator(cfg)
split = split_train(load_split(export, "train"), cfg.val_ratio, cfg.seed)
tokenizer = AutoTokenizer.from_pretrained(Path(run) / "backbone")  # the run's tokenizer, mask token included
loader = accelerator.prepare(train_loader(TrainImages(split, tokenizer, cfg, 8, ALL_NEEDS), cfg))
steps = [batch["item"].tolist() for batch in loader]
Path(out, f"rank{accelerator.process_index}.json").write_text(json.dumps({"processes": accelerator.num_processes,
                                                                          "items": len(split.items), "steps": steps}))
