"""Training in two processes (torch.distributed.run, gloo on CPU): the code path `accelerate launch` takes on GPUs.

`accelerate launch --cpu` starts a single process unless MPI is installed, so the test
starts the two ranks with torchrun and ACCELERATE_USE_CPU=1, which makes accelerate
use its multi-CPU (DDP over gloo) mode: the same Accelerator, DDP wrapping, sharded
loader and collectives as several GPUs, on another backend.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from t2iverw.training.config import TINY_CONFIG

SETTINGS = {"epochs": 2, "batch_size": 16, "num_workers": 0}
ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
TOLERANCE = 0.05  # per-epoch mean loss, relative: the two runs differ only in their random draws (flips, masking)


def torchrun(*args: str) -> list[str]:
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), *args]


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and both ranks (torchrun starts its workers in their own sessions)."""
    import psutil

    ranks = psutil.Process(proc.pid).children(recursive=True)
    for p in [psutil.Process(proc.pid), *ranks]:
        p.kill()
    psutil.wait_procs(ranks, timeout=30)
    proc.wait()


def train_args(export_dir: Path, run: Path) -> list[str]:
    sets = [a for k, v in SETTINGS.items() for a in ("--set", f"{k}={v}")]
    return ["train", "--dataset", str(export_dir), "--out", str(run), "--config", str(TINY_CONFIG), *sets]


@pytest.fixture(scope="module")
def two_process_run(export_dir, tmp_path_factory):
    """Two ranks, killed once the first epoch's checkpoint exists, then resumed to the end."""
    run = tmp_path_factory.mktemp("ddp") / "run"
    cmd = torchrun("-m", "t2iverw.cli", *train_args(export_dir, run))
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 400
        while not (run / "checkpoints" / "epoch-0001").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
    finally:
        kill_tree(proc)
    killed = {"checkpoints": sorted(p.name for p in (run / "checkpoints").iterdir()),
              "summary": (run / "summary.json").exists()}
    resumed = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return run, killed, resumed.stdout + resumed.stderr


@pytest.fixture(scope="module")
def one_process_run(export_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("single") / "run"
    subprocess.run([sys.executable, "-m", "t2iverw.cli", *train_args(export_dir, run)], env=ENV, check=True,
                   capture_output=True, timeout=600)
    return run


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_and_writes_once(two_process_run):
    run, killed, output = two_process_run
    assert killed["checkpoints"] == ["epoch-0001"] and not killed["summary"], "not killed mid-run"
    assert output.count("resuming after epoch 1") == 1  # said once, by the main process
    assert [r["epoch"] for r in records(run)] == [1, 2]  # one record per epoch, from one process
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-0002"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["global_batch"] == 16 and summary["selected_epoch"] == 2


@pytest.mark.slow
def test_two_processes_follow_the_single_process_loss_curve(two_process_run, one_process_run):
    two, one = records(two_process_run[0]), records(one_process_run)
    assert [r["lr"] for r in two] == [r["lr"] for r in one]  # one schedule step per global batch
    for a, b in zip(two, one):
        for key in ("loss", "sdm"):  # SDM is the term a per-rank batch would change: it is gathered
            assert abs(a[key] - b[key]) <= TOLERANCE * b[key], (key, a["epoch"], a[key], b[key])


@pytest.mark.slow
def test_ranks_see_disjoint_slices_of_every_global_batch(two_process_run, export_dir, tmp_path):
    run = two_process_run[0]
    script = Path(__file__).with_name("rank_batches.py")
    sets = [f"{k}={v}" for k, v in SETTINGS.items()]
    subprocess.run(torchrun(str(script), str(export_dir), str(run), str(tmp_path), *sets), env=ENV, check=True,
                   capture_output=True, timeout=600)
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert all(r["processes"] == 2 for r in ranks)
    steps0, steps1 = ranks[0]["steps"], ranks[1]["steps"]
    assert len(steps0) == len(steps1) == -(-ranks[0]["items"] // 16)
    for a, b in zip(steps0, steps1):  # each rank takes its own half of every global batch of 16
        assert len(a) == len(b) == 8 and not set(a) & set(b)
    seen = [i for step in steps0 + steps1 for i in step]
    assert set(seen) == set(range(ranks[0]["items"]))  # together they cover the epoch


def _sdm_rank(rank: int, init: str, x, labels, w, out):
    """One rank of a 2-process gloo group: its half of the batch through a shared weight, SDM on the gathered batch."""
    import torch.distributed as dist

    from t2iverw.training.distributed import gather
    from t2iverw.models.losses import sdm

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    w = w.clone().requires_grad_(True)
    half = slice(4 * rank, 4 * rank + 4)
    image, text, lab = gather(x[half] @ w, (x[half] + 0.5) @ w, labels[half])
    loss = sdm(image, text, lab, 14.3)
    loss.backward()
    dist.all_reduce(w.grad)  # what DDP does with a shared parameter's gradient: the mean over ranks
    out[rank] = (loss.detach(), w.grad / 2)
    dist.destroy_process_group()


def test_gathered_sdm_gives_the_single_process_loss_and_gradient(tmp_path):
    import torch
    import torch.multiprocessing as mp

    from t2iverw.models.losses import sdm

    torch.manual_seed(0)
    x, w, labels = torch.randn(8, 5), torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 3, 1, 4, 5])
    single_w = w.clone().requires_grad_(True)
    single = sdm(x @ single_w, (x + 0.5) @ single_w, labels, 14.3)
    single.backward()
    out = mp.Manager().dict()
    mp.spawn(_sdm_rank, args=(f"file://{tmp_path / 'store'}", x, labels, w, out), nprocs=2)
    for rank in range(2):
        loss, grad = out[rank]
        assert torch.allclose(loss, single.detach(), atol=1e-6)
        assert torch.allclose(grad, single_w.grad, atol=1e-6)
    alone = sdm(x[:4] @ w, (x[:4] + 0.5) @ w, labels[:4], 14.3)  # what a rank would compute without the gather
    assert not torch.allclose(alone, single.detach(), atol=1e-3)
