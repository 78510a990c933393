"""Every reader against a build at every stage: it does its job for what is there, or refuses with one
`Error:` line naming the stage that is missing (annotations/schema.md, "What each command needs").

States: indexed only, captioned only, segmented only (no captions), each with and without a split;
a person-search import (captions and a split, no part files at all: the one kind of release that can
lack them, since the T2I-VeRW loader needs a part file on every train record); and a T2I-VeRW release
import (captions, parts, the release's own split, augmented copies)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import datasets
import pytest
from click.testing import CliRunner

from t2iverw.build import BuildDir
from t2iverw.cli import cli
from t2iverw.demo import write_truth_parts
from tests.person_search import write_person_set
from tests.release.conftest import write_release

STATES = {  # name: (captioned, segmented, split)
    "indexed": (False, False, False),
    "captioned": (True, False, False),
    "segmented": (False, True, False),
    "indexed+split": (False, False, True),
    "captioned+split": (True, False, True),
    "segmented+split": (False, True, True),
    "person-import": (True, False, True),  # import-release --format rstpreid
    "release-import": (True, True, True),  # import-release of a T2I-VeRW release (tests/release/conftest.py)
}
READERS = ("report", "show", "caption-qa", "review", "export", "eval", "split")


@pytest.fixture(scope="module")
def builds(synth_root, tmp_path_factory) -> dict:
    """One build per state, made by the stages' own commands (parts: the sample's true masks)."""
    out = {}
    for name, (captioned, segmented, split) in STATES.items():
        build = tmp_path_factory.mktemp(name.replace("+", "-")) / "build"
        if name == "person-import":
            invoke("import-release", write_person_set(build.parent, "rstpreid")["root"], "--out", build)
            out[name] = build
            continue
        if name == "release-import":
            write_release(build.parent / "release", ids=9)
            invoke("import-release", build.parent / "release", "--out", build)
            out[name] = build
            continue
        invoke("index", synth_root, "--out", build)
        if captioned:
            invoke("caption", build, "--backend", "template")
        if segmented:
            write_truth_parts(BuildDir.open(build))
        if split:
            invoke("split", build, "--seed", "0")
        out[name] = build
    return out


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code in (0, 2), result.output  # 1 would be a traceback
    return result.exit_code, result.output


def refused(code: int, out: str, stage: str) -> bool:
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    return code == 2 and len(errors) == 1 and f"t2iverw {stage}" in errors[0] and "Traceback" not in out


def run_reader(reader: str, build, tmp_path, start_served) -> tuple[int, str]:
    image = BuildDir.open(build).images(["image_id"]).column("image_id")[0].as_py()
    if reader == "review":  # a server: it either starts and serves a queue, or exits at once
        probe = subprocess.run([sys.executable, "-m", "t2iverw.cli", "review", str(build), "--port", "0",
                                "--reviewer", "matrix", "--only", "all"], capture_output=True, text=True, timeout=30) \
            if not BuildDir.open(build).captions() else None
        if probe is not None:
            return probe.returncode, probe.stderr
        app = start_served("review", str(build), "--port", "0", "--reviewer", "matrix", "--only", "all")
        import urllib.request

        queue = json.loads(urllib.request.urlopen(f"{app.base}/api/queue?scope=all", timeout=30).read())
        return (0 if queue["ids"] else 1), json.dumps(queue)
    args = {
        "report": ["report", build, "--out", tmp_path / "report"],
        "show": ["show", build, image, "--out", tmp_path / "show.png"],
        "caption-qa": ["caption-qa", build],
        "export": ["export", build, "--out", tmp_path / "ds", "--no-images"],
        "eval": ["eval", build, "--print-order"],  # then, where it can, a ranks.json (below)
        "split": ["split", build, "--seed", "1"],
    }[reader]
    return invoke(*args)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("state", STATES)
def test_reader_at_stage(state, reader, builds, tmp_path, start_served):
    captioned, segmented, split = STATES[state]
    build = tmp_path / "build"
    shutil.copytree(builds[state], build)
    code, out = run_reader(reader, build, tmp_path, start_served)
    if reader == "report":
        page = (tmp_path / "report" / "index.html").read_text()
        assert code == 0 and ('id="no-parts"' in page) != segmented and ('id="no-captions"' in page) != captioned
    elif reader == "show":
        assert code == 0 and (tmp_path / "show.png").read_bytes().startswith(b"\x89PNG")
    elif reader in ("caption-qa", "review"):
        assert (code == 0) if captioned else refused(code, out, "caption"), out
    elif reader == "export":
        if not split:
            assert refused(code, out, "split"), out
        else:
            assert code == 0, out
            test = datasets.load_dataset(str(tmp_path / "ds"), split="test")
            assert (test[0]["caption"] is not None) == captioned and (test[0]["part_grid"] is not None) == segmented
    elif reader == "eval":
        if not split:
            assert refused(code, out, "split"), out
        elif not captioned:
            assert refused(code, out, "caption"), out
        else:
            assert code == 0 and len(json.loads(out)["queries"]) > 0, out
            order = json.loads(out)
            ranks = tmp_path / "ranks.json"
            ranks.write_text(json.dumps({q: order["gallery"] for q in order["queries"]}))
            code, out = invoke("eval", build, "--pred", ranks, "--json")
            metrics = json.loads(out)
            assert code == 0 and all(0 <= metrics[k] <= 100 for k in ("R1", "R5", "R10", "mAP", "mINP")), out
    elif reader == "split":
        assert code == 0 and json.loads((build / "split.json").read_text())["test_ids"]


@pytest.mark.parametrize("model, args", [("pfcvr", []), ("cpsl", ["--set", "part_supervision=masks"])])
def test_part_supervised_training_refuses_an_export_without_parts(model, args, builds, tmp_path):
    """Without the check, PFCVR trained on such an export with an all-empty part target (part loss 0)."""
    code, out = invoke("export", builds["captioned+split"], "--out", tmp_path / "ds")
    assert code == 0, out
    code, out = invoke("train", "--model", model, "--config", "tiny", *args, "--dataset", tmp_path / "ds",
                       "--out", tmp_path / "run")
    assert refused(code, out, "segment"), out
    assert not (tmp_path / "run").exists()
