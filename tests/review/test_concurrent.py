"""A review writes into a build while `t2iverw caption` runs on another shard, or while another review process
writes it (one request at a time, and at the same instant): every record of each is kept."""

from __future__ import annotations

import json
import subprocess
import sys

from t2iverw.build import BuildDir
from t2iverw.caption.run import run_captions
from t2iverw.runner import shard_of
from t2iverw.storage import read_jsonl




def test_review_beside_a_caption_run_on_another_shard(build_dir, start_app, raw_http):
    run_captions(build_dir, backend="template", shard=(1, 2), progress=False)
    ids = BuildDir.open(build_dir).images(["image_id"]).column("image_id").to_pylist()
    shard0 = [i for i in ids if shard_of(i, 2) == 0]
    shard1 = [i for i in ids if shard_of(i, 2) == 1]
    app = start_app(build_dir, "--reviewer", "fay", "--only", "all")
    assert json.loads(raw_http(app.base, "GET", "/api/queue?scope=all")[1])["ids"] == shard1

    decided: list[tuple[str, str]] = []

    def decide() -> None:
        image_id = shard1[len(decided) % len(shard1)]
        text = f"Caption {len(decided)} of a reviewed vehicle with its wheels, lights, roof and windows."
        status, body, _ = raw_http(app.base, "POST", "/api/decisions", {"image_id": image_id, "action": "save",
                                                                       "text": text}, headers={"X-T2IVERW": "1"})
        assert status == 200, body
        decided.append((image_id, text))

    for _ in range(5):
        decide()
    caption = subprocess.Popen([sys.executable, "-m", "t2iverw.cli", "caption", str(build_dir), "--backend",
                                "template", "--shard", "0/2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    while caption.poll() is None:
        decide()
    out = caption.stdout.read()
    assert caption.returncode == 0, out
    for _ in range(5):
        decide()

    logs = build_dir / "captions"
    model0 = list(read_jsonl(logs / "shard-00000-of-00002.jsonl"))
    model1 = list(read_jsonl(logs / "shard-00001-of-00002.jsonl"))
    human = list(read_jsonl(logs / "review-fay.jsonl"))
    # the caption run did its whole shard exactly once, the earlier shard is untouched
    assert sorted(r["image_id"] for r in model0) == sorted(shard0) and all(r["status"] == "ok" for r in model0)
    assert sorted(r["image_id"] for r in model1) == sorted(shard1)
    # every decision is a record, in order, and the caption run really ran in the middle of the review
    assert [(r["image_id"], r["text"]) for r in human] == decided
    assert all(r["source"] == "human" and r["reviewer"] == "fay" and r["action"] == "edit" for r in human)
    caption_t = [r["t"] for r in model0]
    assert min(r["t"] for r in human) < min(caption_t) and max(r["t"] for r in human) > max(caption_t)
    # and the build's view: shard 0 captioned by the model, each reviewed image's latest record is its last decision
    latest = BuildDir.open(build_dir).latest("captions")
    assert all(latest[i].get("source") == "model" and latest[i]["status"] == "ok" for i in shard0)
    last = dict(decided)
    assert all(latest[i]["text"] == last[i] and latest[i]["source"] == "human" for i in last)


def test_two_reviewers_deciding_the_same_images_interleaved_lose_nothing(review_build, start_app, raw_http):
    """Two review processes on one build, their decisions on the same images interleaved (one request at a
    time, so the order they were answered in is known): every decision is a record in its reviewer's log,
    and each image's caption is the decision answered last, whichever process wrote it."""
    import threading

    apps = {name: start_app(review_build, "--reviewer", name, "--only", "all") for name in ("ann", "bob")}
    ids = json.loads(raw_http(apps["ann"].base, "GET", "/api/queue?scope=all")[1])["ids"][:4]
    answered: list[tuple[str, str, str]] = []  # (reviewer, image, text), in the order the server answered
    lock = threading.Lock()

    def review(name: str) -> None:
        for k in range(12):
            image_id, text = ids[k % len(ids)], f"Decision {k} of {name}: a vehicle with wheels, lights and a roof."
            with lock:  # the answer order is the truth the build must agree with
                status, body, _ = raw_http(apps[name].base, "POST", "/api/decisions",
                                           {"image_id": image_id, "action": "save", "text": text},
                                           headers={"X-T2IVERW": "1"})
                assert status == 200, body
                answered.append((name, image_id, text))

    threads = [threading.Thread(target=review, args=(name,)) for name in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answered) == 24
    for name in apps:
        logged = [(r["image_id"], r["text"]) for r in read_jsonl(review_build / "captions" / f"review-{name}.jsonl")]
        assert logged == [(i, t) for n, i, t in answered if n == name]
    last = {i: t for _, i, t in answered}
    latest = BuildDir.open(review_build).latest("captions")
    assert {i: latest[i]["text"] for i in ids} == last


def test_two_reviewers_writing_at_the_same_instant_lose_nothing(review_build, start_app, raw_http):
    """Two review processes, two client threads each, every round's four decisions released together by
    a barrier (so writes from both processes, and two within one, meet at the same instant), all on the
    same few images: every decision is a whole line in its reviewer's log, stamped in file order, each thread's
    in its order, and each image's caption is one of the last round's decisions on it (which of the four
    simultaneous ones is last cannot be known from outside)."""
    import threading

    rounds = 20
    apps = {name: start_app(review_build, "--reviewer", name, "--only", "all") for name in ("ann", "bob")}
    ids = json.loads(raw_http(apps["ann"].base, "GET", "/api/queue?scope=all")[1])["ids"][:3]
    clients = [(name, k) for name in apps for k in range(2)]
    barrier = threading.Barrier(len(clients), timeout=60)
    sent: dict[tuple[str, int], list[tuple[str, str]]] = {c: [] for c in clients}
    failures: list[str] = []

    def review(name: str, k: int) -> None:
        for n in range(rounds):
            image_id, text = ids[n % len(ids)], f"Round {n}, {name} client {k}: a vehicle with wheels and a roof."
            barrier.wait()
            status, body, _ = raw_http(apps[name].base, "POST", "/api/decisions",
                                       {"image_id": image_id, "action": "save", "text": text},
                                       headers={"X-T2IVERW": "1"})
            if status != 200:
                failures.append(f"{name}/{k} round {n}: {status} {body[:200]!r}")
            sent[(name, k)].append((image_id, text))

    threads = [threading.Thread(target=review, args=c) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    for name in apps:
        lines = (review_build / "captions" / f"review-{name}.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]  # a torn or interleaved line fails json.loads
        logged = [(r["image_id"], r["text"]) for r in records]
        stamps = [(r["seq"], r["t"]) for r in records]  # readers trust the stamps: file order must agree with them
        assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(stamps, stamps[1:])), stamps
        mine = [d for (n, _), ds in sent.items() if n == name for d in ds]
        assert sorted(logged) == sorted(mine) and len(logged) == 2 * rounds  # none lost, none twice
        for k in range(2):
            assert [d for d in logged if d in sent[(name, k)]] == sent[(name, k)]  # each client's order kept
    latest = BuildDir.open(review_build).latest("captions")
    last_round = {i: max(n for n in range(rounds) if ids[n % len(ids)] == i) for i in ids}
    for i in ids:
        assert latest[i]["source"] == "human" and latest[i]["text"].startswith(f"Round {last_round[i]}, ")
