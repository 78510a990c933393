"""Endpoint rotation and the API key, without a network (the pool's own scheduling logic)."""

from __future__ import annotations

import asyncio
import time

from t2iverw.caption.client import EndpointPool, api_key

URLS = ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1/", "http://10.0.0.3:8000/v1"]


def test_rotation_skips_a_down_endpoint_until_its_cooldown_ends():
    pool = EndpointPool(URLS, backoff=0.2)
    assert [ep.url for ep in pool.endpoints] == [u.rstrip("/") for u in URLS]
    pool.endpoints[1].mark_down(pool.backoff)

    async def picks(n):
        return [(await pool._next()).url for _ in range(n)]

    assert asyncio.run(picks(4)) == [URLS[0], URLS[2], URLS[0], URLS[2]]
    time.sleep(0.25)
    assert URLS[1].rstrip("/") in asyncio.run(picks(3))


def test_cooldown_doubles_per_outage_not_per_concurrent_failure():
    ep = EndpointPool(URLS[:1]).endpoints[0]
    ep.mark_down(0.05)
    first = ep.down_until
    ep.mark_down(0.05)  # another request of the same outage
    assert ep.down_until == first and ep.failures == 1
    time.sleep(0.06)
    before = time.monotonic()
    ep.mark_down(0.05)  # still down when tried again
    assert ep.failures == 2 and ep.down_until - before >= 0.1
    ep.mark_up()
    assert ep.failures == 0 and ep.down_until == 0


def test_all_down_waits_for_the_first_to_come_back():
    pool = EndpointPool(URLS[:2], backoff=0.1)
    a, b = pool.endpoints
    b.mark_down(0.2)
    a.mark_down(0.1)
    began = time.monotonic()
    assert asyncio.run(pool._next()) is a
    assert time.monotonic() - began >= 0.08


def test_api_key_from_environment(monkeypatch):
    monkeypatch.delenv("T2IVERW_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert api_key() == "EMPTY"
    monkeypatch.setenv("OPENAI_API_KEY", "k1")
    assert api_key() == "k1"
    monkeypatch.setenv("T2IVERW_API_KEY", "k2")
    assert api_key() == "k2"


def test_the_served_model_names_the_records_and_a_mismatch_is_refused():
    import pytest

    from t2iverw.caption.backends import resolve_model
    from t2iverw.caption.client import ServedModel
    from t2iverw.errors import T2IError

    vllm = [ServedModel("Qwen/Qwen3-VL-32B-Instruct-FP8", "/models/qwen3-vl-32b-fp8")]
    assert resolve_model(None, vllm, "u") == ("Qwen/Qwen3-VL-32B-Instruct-FP8", "/models/qwen3-vl-32b-fp8")
    assert resolve_model("Qwen/Qwen3-VL-32B-Instruct-FP8", vllm, "u")[1] == "/models/qwen3-vl-32b-fp8"
    with pytest.raises(T2IError, match=r"serves Qwen/Qwen3-VL-32B-Instruct-FP8 \(from /v1/models\), not --model "
                                       r"'Qwen/Qwen3-VL-32B-Instruct'"):
        resolve_model("Qwen/Qwen3-VL-32B-Instruct", vllm, "u")
    on_demand = [ServedModel("org/cached-model", None)]  # `transformers serve` lists its cache, loads any path
    assert resolve_model("/ckpt/tiny", on_demand, "u") == ("/ckpt/tiny", None)
    with pytest.raises(T2IError, match="name the model to caption with --model"):
        resolve_model(None, on_demand + [ServedModel("org/other", None)], "u")
    with pytest.raises(T2IError, match="lists no model"):
        resolve_model(None, [], "u")
