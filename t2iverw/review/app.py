"""The review app: a FastAPI JSON API plus one static page (plain HTML and a little JavaScript).

The page can write to the build, so every request passes one gate: with a token, it
must carry it (cookie set from the printed URL, header, or `?token=`); requests that
change anything must carry the `X-T2IVERW` header, which no other site's page can send
without a CORS preflight this app never grants; and on a loopback bind the Host header
must name the loopback, which stops DNS rebinding; a write whose `Origin` is not this
app is refused too. Image ids are looked up in the
index and files are served only from the index's paths under the source root, so no
URL can reach another file.
"""

from __future__ import annotations

import importlib.resources
import mimetypes
import secrets
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.staticfiles import StaticFiles

from t2iverw.caption.qa import qa_flags
from t2iverw.constants import PARTS
from t2iverw.errors import T2IError
from t2iverw.review.decisions import DecisionLog, decision_record
from t2iverw.review.drafts import Drafts
from t2iverw.review.overlay import layer_png, part_mask
from t2iverw.review.state import SCOPES, ReviewState
from t2iverw.segment.show import COLOURS

COOKIE = "t2iverw_review_token"
WRITE_HEADER = "x-t2iverw"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost"]
PROVENANCE_HIDDEN = {"text", "texts", "edited_from", "image_id", "caption_id", "qa"}


class Decision(BaseModel):
    image_id: str
    action: str
    text: str | None = None


class Draft(BaseModel):
    text: str


def create_app(log: DecisionLog, *, scope: str = "unreviewed", token: str | None = None,
               loopback: bool = True) -> FastAPI:
    """The app of an open decision log (its build and reviewer); `loopback` restricts the Host header."""
    bd, reviewer = log.build, log.reviewer
    if scope not in SCOPES:
        raise T2IError(f"unknown queue {scope!r}; choose one of {', '.join(SCOPES)}")
    state = ReviewState(bd)
    drafts = Drafts(bd, reviewer)
    source_root = bd.source_root.resolve()

    app = FastAPI(title="t2iverw review", docs_url=None, redoc_url=None, openapi_url=None)
    guard(app, token=token, loopback=loopback)

    def row(image_id: str) -> dict:
        if image_id not in state.rows:
            raise HTTPException(404, f"no image {image_id!r} in the index")
        return state.rows[image_id]

    def item(image_id: str) -> dict:
        r = row(image_id)
        try:
            cap = state.caption(image_id)
        except KeyError:
            raise HTTPException(404, f"image {image_id!r} has no caption to review") from None
        rec = cap.record
        parts = state.parts.get(image_id)
        return {
            "image_id": image_id,
            "meta": {k: r[k] for k in ("vehicle_id", "color", "type", "model", "camera_id", "time", "width", "height")},
            "text": rec.get("text", ""),
            "machine_text": cap.machine_text,
            "status": cap.status,
            "flags": list(state.current_flags(image_id)),
            "machine_flags": list(cap.flags),
            "provenance": {k: v for k, v in rec.items() if k not in PROVENANCE_HIDDEN},
            "parts": [{"name": p, "score": (parts.get("scores") or [None] * len(PARTS))[k]} for k, p in enumerate(PARTS)]
            if parts else None,
            "draft": drafts.get(image_id),
        }

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse((importlib.resources.files("t2iverw.review") / "static" / "index.html").read_text("utf-8"))

    @app.get("/api/info")
    def info() -> dict:
        return {"build": str(bd.root.resolve()), "reviewer": reviewer, "scope": scope, "scopes": list(SCOPES),
                "parts": list(PARTS), "colours": [_hex(c) for c in COLOURS], "counts": state.counts()}

    @app.get("/api/queue")
    def queue(scope: str = scope, flag: str | None = None, q: str | None = None) -> dict:
        try:
            ids = state.queue(scope, flag or None, q or None)
        except T2IError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"ids": ids, "counts": state.counts()}

    @app.get("/api/items/{image_id}")
    def get_item(image_id: str) -> dict:
        return item(image_id)

    @app.post("/api/decisions")
    def decide(decision: Decision) -> dict:
        row(decision.image_id)
        try:
            cap = state.caption(decision.image_id)  # the newest record, read again if a log changed
        except KeyError:
            raise HTTPException(404, f"image {decision.image_id!r} has no caption to review") from None
        text = decision.text if decision.action == "save" else cap.record.get("text", "")
        try:
            record = decision_record(decision.image_id, decision.action, text or "", cap.machine_text, reviewer,
                                     texts=cap.record.get("texts"))
            written = log.write(record, after=cap.record)
        except T2IError as exc:
            raise HTTPException(400, str(exc)) from None
        state.wrote(written, log.path)  # no re-read of every caption log for our own record
        drafts.drop(decision.image_id)
        return {"record": written, "item": item(decision.image_id), "counts": state.counts()}

    @app.put("/api/drafts/{image_id}")
    def put_draft(image_id: str, draft: Draft) -> dict:
        row(image_id)
        # flags of a text being typed: computed, not cached (the cache is for the captions' own texts)
        return {"draft": drafts.put(image_id, draft.text), "flags": list(qa_flags(draft.text, state.rows[image_id]))}

    @app.delete("/api/drafts/{image_id}")
    def drop_draft(image_id: str) -> dict:
        row(image_id)
        drafts.drop(image_id)
        return {"dropped": image_id}

    @app.get("/api/images/{image_id}/photo")
    def photo(image_id: str) -> FileResponse:
        path = (source_root / row(image_id)["path"]).resolve()
        if not path.is_relative_to(source_root) or not path.is_file():
            raise HTTPException(404, f"image {image_id!r} is not under the source root")
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/images/{image_id}/parts/{part}.png")
    def layer(image_id: str, part: int) -> Response:
        r = row(image_id)
        rec = state.parts.get(image_id)
        if rec is None or not 0 <= part < len(PARTS):
            raise HTTPException(404, f"image {image_id!r} has no part {part}")
        png = layer_png(part_mask(rec, part, (r["width"], r["height"])), part)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.exception_handler(T2IError)
    async def user_error(request: Request, exc: T2IError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    static = importlib.resources.files("t2iverw.review") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app


def guard(app: FastAPI, *, token: str | None, loopback: bool) -> None:
    """The gate of every app `t2iverw` serves (review, search): Host check, token, write header."""
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS if loopback else ["*"])

    @app.middleware("http")
    async def gate(request: Request, call_next):
        if token is not None:
            given = request.headers.get("x-review-token") or request.cookies.get(COOKIE) or \
                request.query_params.get("token") or ""
            if not secrets.compare_digest(given.encode(), token.encode()):
                return Response("missing or wrong review token\n", status_code=401, media_type="text/plain")
        if request.method not in ("GET", "HEAD"):
            if request.headers.get(WRITE_HEADER) != "1":
                return Response(f"writes need the {WRITE_HEADER} header\n", status_code=403, media_type="text/plain")
            if not same_origin(request):
                return Response("writes from another origin are refused\n", status_code=403, media_type="text/plain")
        response = await call_next(request)
        if token is not None and request.query_params.get("token") == token:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response


def same_origin(request: Request) -> bool:
    """A browser names the page that sent a write in `Origin`; it must be this app (no Origin: not a browser)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    parsed = urlsplit(origin)
    return parsed.scheme == request.url.scheme and parsed.netloc == request.headers.get("host")


def hex_colours() -> list[str]:
    """The parts' `show` colours as CSS hex, in part order."""
    return [_hex(c) for c in COLOURS]


def _hex(colour) -> str:
    return "#" + "".join(f"{round(float(c) * 255):02x}" for c in colour)
