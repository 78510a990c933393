"""A captioned build and its export, shared (read-only) by the evaluation tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from t2iverw.build import BuildDir
from t2iverw.runner import open_log


def write_captions(build: Path) -> None:
    """Caption every image from its metadata, as the caption stage would record them (one per image)."""
    bd = BuildDir(build)
    rows = bd.images(["image_id", "color", "type"]).to_pylist()
    with open_log(bd, "captions", "main", source="model", settings={"model": "metadata words"}) as log:
        log.append({"image_id": r["image_id"], "caption_id": r["image_id"], "status": "ok",
                    "text": f"A {r['color']} {r['type']} seen from a roadside camera."} for r in rows)


@pytest.fixture(scope="session")
def captioned_build(_indexed_split_build, tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("eval") / "build"
    shutil.copytree(_indexed_split_build, build)
    write_captions(build)
    return build


@pytest.fixture(scope="session")
def export_dir(captioned_build, tmp_path_factory) -> Path:
    from t2iverw.export import export_dataset

    out = tmp_path_factory.mktemp("eval") / "export"
    export_dataset(captioned_build, out)
    return out
