"""The review app can write to the build: who may reach it, and what its URLs can reach."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from t2iverw.build import BuildDir
from t2iverw.cli import cli


def human_records(build) -> list[dict]:
    return [r for r in BuildDir.open(build).latest("captions").values() if r.get("source") == "human"]


def test_non_local_bind_needs_a_token(review_build):
    result = CliRunner().invoke(cli, ["review", str(review_build), "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 2
    assert result.output.startswith("Error:") and "--token" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_with_a_token_every_request_must_carry_it(review_build, start_app, raw_http):
    app = start_app(review_build, "--host", "0.0.0.0", "--token", "s3cret", "--reviewer", "dan")
    base = app.base.replace("0.0.0.0", "127.0.0.1")
    image_id = json.loads(raw_http(base, "GET", "/api/queue", headers={"X-Review-Token": "s3cret"})[1])["ids"][0]
    for method, path, body in (("GET", "/", None), ("GET", "/api/info", None), ("GET", f"/api/images/{image_id}/photo", None),
                               ("POST", "/api/decisions", {"image_id": image_id, "action": "accept"})):
        status, _, _ = raw_http(base, method, path, body, headers={"X-T2IVERW": "1"})
        assert status == 401, (method, path)
        status, _, _ = raw_http(base, method, path, body, headers={"X-T2IVERW": "1", "X-Review-Token": "wrong"})
        assert status == 401, (method, path)
    assert human_records(review_build) == []
    # the printed URL carries the token; the page then holds it in a cookie
    status, _, headers = raw_http(base, "GET", "/?token=s3cret")
    assert status == 200 and "t2iverw_review_token=s3cret" in headers.get("set-cookie", "")
    status, _, _ = raw_http(base, "GET", f"/api/images/{image_id}/photo",
                           headers={"Cookie": "t2iverw_review_token=s3cret"})
    assert status == 200
    status, _, _ = raw_http(base, "POST", "/api/decisions", {"image_id": image_id, "action": "accept"},
                           headers={"X-T2IVERW": "1", "X-Review-Token": "s3cret"})
    assert status == 200 and [r["image_id"] for r in human_records(review_build)] == [image_id]


def test_path_traversal_ids_get_404(review_build, start_app, raw_http):
    app = start_app(review_build, "--reviewer", "eve")
    secret = (review_build / "build.json").read_text()
    for path in ("/api/images/..%2F..%2Fbuild.json/photo", "/api/images/../../build.json/photo",
                 "/api/images/%2e%2e/photo", "/api/images/..%2Fimages.parquet/photo",
                 "/api/images/%2Fetc%2Fpasswd/photo", "/api/images/..%5C..%5Cbuild.json/photo",
                 "/api/items/..%2F..%2Fbuild.json", "/api/images/000001/parts/..%2F..%2Fbuild.json.png",
                 "/static/..%2F..%2F..%2Fbuild.json", "/static/../app.py"):
        status, body, _ = raw_http(app.base, "GET", path)
        assert status == 404, path
        assert b"source_root" not in body and secret.encode() not in body
    status, _, _ = raw_http(app.base, "GET", "/api/images/000001/parts/6.png")
    assert status == 404


def test_writes_need_the_app_header_and_a_loopback_host(review_build, start_app, raw_http):
    app = start_app(review_build, "--reviewer", "eve")
    image_id = json.loads(raw_http(app.base, "GET", "/api/queue")[1])["ids"][0]
    # another site's page can POST a plain form or a no-cors fetch, but cannot add a custom header
    status, _, _ = raw_http(app.base, "POST", "/api/decisions", {"image_id": image_id, "action": "accept"})
    assert status == 403
    # a browser names the page that sent a write: another origin is refused even with the header
    for origin in ("http://evil.example", "null", app.base.replace("http://", "https://")):
        status, _, _ = raw_http(app.base, "POST", "/api/decisions", {"image_id": image_id, "action": "accept"},
                                headers={"X-T2IVERW": "1", "Origin": origin})
        assert status == 403, origin
    # DNS rebinding: a foreign name resolving to 127.0.0.1 still names itself in the Host header
    status, _, _ = raw_http(app.base, "GET", "/api/info", headers={"Host": "evil.example"})
    assert status == 400
    assert human_records(review_build) == []
    status, _, _ = raw_http(app.base, "POST", "/api/decisions", {"image_id": image_id, "action": "accept"},
                            headers={"X-T2IVERW": "1", "Origin": app.base})
    assert status == 200 and [r["image_id"] for r in human_records(review_build)] == [image_id]


def test_one_app_per_reviewer_and_build(review_build, start_app):
    start_app(review_build, "--reviewer", "gil")
    second = subprocess.run([sys.executable, "-m", "t2iverw.cli", "review", str(review_build), "--port", "0",
                             "--reviewer", "gil"], capture_output=True, text=True, timeout=120)
    assert second.returncode == 2
    assert second.stderr.startswith("Error:") and "review-gil.jsonl is being written by pid" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
