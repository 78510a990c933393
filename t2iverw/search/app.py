"""The search page: a FastAPI JSON API over one `Searcher`, plus one static page.

It is served under the review app's gate (`t2iverw.review.app.guard`: the same token,
cookie and Host rules) and draws parts with the review app's overlay layers. Images are
served only by gallery id from the export's own `image` column, so no URL reaches a
file. The page puts every text into the DOM as text (captions may hold HTML).
"""

from __future__ import annotations

import importlib.resources
import io
from functools import cached_property

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Response
from fastapi.responses import HTMLResponse
from PIL import Image
from starlette.staticfiles import StaticFiles

from t2iverw.constants import PARTS
from t2iverw.errors import T2IError
from t2iverw.grid import grid_to_mask
from t2iverw.review.app import guard, hex_colours
from t2iverw.review.overlay import layer_png, part_mask
from t2iverw.search.failures import first_correct, worst
from t2iverw.search.index import Searcher, split_queries

MAX_TOP = 100


class Gallery:
    """The test split's images and part annotations by image id, and its captions with their features."""

    def __init__(self, searcher: Searcher, dataset):
        import datasets

        from t2iverw.training.data import load_split

        self.searcher = searcher
        rows = load_split(dataset, "test", ["image_id", "vehicle_id", "image"], optional=["part_masks", "part_grid"])
        rows = rows.cast_column("image", datasets.Image(decode=False))
        self.rows = {r["image_id"]: r for r in rows}
        self.queries = split_queries(dataset)

    def row(self, image_id: str) -> dict:
        if image_id not in self.rows:
            raise HTTPException(404, f"no test image {image_id!r}")
        return self.rows[image_id]

    @cached_property
    def query_features(self) -> torch.Tensor:
        return self.searcher.encode_texts(self.queries.texts)

    @cached_property
    def first(self):
        s = self.searcher
        return first_correct(self.query_features, self.queries.labels, s.gallery, s.vehicle_ids)

    def truth(self, vehicle_id: str) -> list[str]:
        return [i for i, v in zip(self.searcher.image_ids, self.searcher.vehicle_ids) if v == vehicle_id]

    def hits(self, feature: torch.Tensor, top: int, vehicle_id: str | None = None) -> list[dict]:
        return [h.to_dict() | {"correct": vehicle_id is not None and h.vehicle_id == vehicle_id}
                for h in self.searcher.top_of(feature, top)]

    def caption(self, index: int, top: int) -> dict:
        q = self.queries
        if not 0 <= index < len(q.ids):
            raise HTTPException(404, f"no test caption {index}")
        found = self.first
        image = int(found.image[index])
        return {"index": index, "query_id": q.ids[index], "text": q.texts[index], "vehicle_id": q.labels[index],
                "results": self.hits(self.query_features[index], top, q.labels[index]),
                "truth": self.truth(q.labels[index]),
                "first_correct": None if found.rank[index] < 0 else {
                    "image_id": self.searcher.image_ids[image], "rank": int(found.rank[index]) + 1,
                    "score": round(float(self.query_features[index] @ self.searcher.gallery[image]), 6)}}

    def parts(self, image_id: str) -> list[bool]:
        r = self.row(image_id)
        if r.get("part_masks"):
            return [True] * len(PARTS)
        grid = r.get("part_grid")
        return [bool(grid) and bool(np.asarray(grid[k]).any()) for k in range(len(PARTS))]

    def layer(self, image_id: str, part: int) -> bytes:
        r = self.row(image_id)
        if not 0 <= part < len(PARTS) or not (r.get("part_masks") or r.get("part_grid")):
            raise HTTPException(404, f"image {image_id!r} has no part {part}")
        with Image.open(io.BytesIO(r["image"]["bytes"])) as im:
            size = im.size
        if r.get("part_masks"):
            mask = part_mask({"masks": r["part_masks"]}, part, size)
        else:
            mask = grid_to_mask(np.asarray(r["part_grid"][part], dtype=bool), size)
        return layer_png(mask, part)


def create_search_app(searcher: Searcher, dataset, *, token: str | None = None, loopback: bool = True,
                      top: int = 10) -> FastAPI:
    gallery = Gallery(searcher, dataset)
    app = FastAPI(title="t2iverw search", docs_url=None, redoc_url=None, openapi_url=None)
    guard(app, token=token, loopback=loopback)

    def clamp(k: int) -> int:
        return max(1, min(MAX_TOP, k))

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse((importlib.resources.files("t2iverw.search") / "static" / "search.html").read_text("utf-8"))

    @app.get("/api/info")
    def info() -> dict:
        meta = searcher.meta
        return {"model": meta.get("model"), "run": meta.get("run"), "checkpoint": meta.get("checkpoint"),
                "dataset": meta.get("dataset"), "gallery": len(searcher.image_ids), "captions": len(gallery.queries.ids),
                "top": top, "parts": list(PARTS), "colours": hex_colours(), "warning": meta.get("warning"),
                "cache": meta.get("cache")}

    @app.get("/api/search")
    def search(q: str = "", top: int = top) -> dict:
        try:
            hits = searcher.search(q, clamp(top))
        except T2IError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"query": q, "results": [h.to_dict() | {"correct": False} for h in hits]}

    @app.get("/api/captions")
    def captions() -> dict:
        qs = gallery.queries
        return {"captions": [{"index": k, "query_id": i, "text": t, "vehicle_id": v}
                             for k, (i, t, v) in enumerate(zip(qs.ids, qs.texts, qs.labels))]}

    @app.get("/api/captions/{index}")
    def caption(index: int, top: int = top) -> dict:
        return gallery.caption(index, clamp(top))

    @app.get("/api/failures")
    def failures(n: int = 20) -> dict:
        return {"failures": [gallery.caption(k, 5) for k in worst(gallery.first, max(1, min(n, 500)))]}

    @app.get("/api/images/{image_id}/photo")
    def photo(image_id: str) -> Response:
        data = gallery.row(image_id)["image"]["bytes"]
        with Image.open(io.BytesIO(data)) as im:
            media = Image.MIME.get(im.format or "", "application/octet-stream")
        return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/images/{image_id}/parts")
    def parts(image_id: str) -> dict:
        return {"image_id": image_id, "parts": gallery.parts(image_id)}

    @app.get("/api/images/{image_id}/parts/{part}.png")
    def layer(image_id: str, part: int) -> Response:
        return Response(gallery.layer(image_id, part), media_type="image/png", headers={"Cache-Control": "no-store"})

    static = importlib.resources.files("t2iverw.search") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app
