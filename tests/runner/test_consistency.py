"""Between stages: a stale split, records of a changed image, and builds that move between machines."""

from __future__ import annotations

import shutil

import datasets
import pytest
from click.testing import CliRunner

from t2iverw.build import BuildDir
from t2iverw.caption import run_captions
from t2iverw.cli import cli
from t2iverw.errors import T2IError
from t2iverw.export import export_dataset
from t2iverw.index import build_index
from t2iverw.split import make_split


def test_a_stale_split_makes_export_exit_2(synth_root, tmp_path):
    build = tmp_path / "build"
    build_index(synth_root, build, limit_ids=4)
    make_split(build, seed=0)
    build_index(synth_root, build, limit_ids=10)  # re-indexed with more identities, split not re-run
    result = CliRunner().invoke(cli, ["export", str(build), "--out", str(tmp_path / "ds")])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "6 indexed identities" in result.output and "in neither train nor test" in result.output
    assert "re-run `t2iverw split" in result.output and not (tmp_path / "ds").exists()
    make_split(build, seed=0)
    assert CliRunner().invoke(cli, ["export", str(build), "--out", str(tmp_path / "ds")]).exit_code == 0


def test_a_split_naming_identities_the_index_lacks_is_stale(synth_root, tmp_path):
    build = tmp_path / "build"
    build_index(synth_root, build, limit_ids=10)
    make_split(build, seed=0)
    build_index(synth_root, build, limit_ids=4)
    with pytest.raises(T2IError, match="of its identities .* are not in the index"):
        export_dataset(build, tmp_path / "ds")


def test_records_of_a_changed_image_stop_export_and_the_image_is_pending_again(synth_root, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(synth_root, source)
    build = tmp_path / "build"
    build_index(source, build)
    make_split(build, seed=0)
    run_captions(build, backend="template", progress=False)
    row = BuildDir.open(build).images(["image_id", "path"]).to_pylist()[3]
    other = BuildDir.open(build).images(["path"]).to_pylist()[0]["path"]
    shutil.copy(source / other, source / row["path"])  # the crop is replaced by another file...
    build_index(source, build)  # ...and re-indexed: its hash changed
    with pytest.raises(T2IError, match=rf"1 caption records \(e.g. {row['image_id']}\) were made from an earlier "
                                       r"version of their image; re-run `t2iverw caption"):
        export_dataset(build, tmp_path / "ds")
    again = run_captions(build, backend="template", progress=False)
    assert again.pending == 1 and again.report.why["pending: image changed"] == 1
    export_dataset(build, tmp_path / "ds")


def test_a_build_moved_with_its_source_still_finds_the_images(synth_root, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(synth_root, site / "veri-wild")
    build_index(site / "veri-wild", site / "build")
    make_split(site / "build", seed=0)
    moved = tmp_path / "elsewhere"
    shutil.move(site, moved)  # the recorded absolute path is gone; the relative one still holds
    run_captions(moved / "build", backend="template", progress=False, limit=3)
    export_dataset(moved / "build", tmp_path / "ds")
    assert datasets.load_dataset(str(tmp_path / "ds"))["train"][0]["image"] is not None


def test_a_build_on_another_mount_takes_source_root_from_option_or_environment(synth_root, tmp_path, monkeypatch):
    build_index(synth_root, tmp_path / "build")
    make_split(tmp_path / "build", seed=0)
    shutil.copytree(tmp_path / "build", tmp_path / "node2" / "build")
    mount = tmp_path / "node2" / "mnt" / "veri-wild"
    shutil.copytree(synth_root, mount)
    bd = BuildDir.open(tmp_path / "node2" / "build")
    info = bd.info()
    info["source_root"] = str(tmp_path / "gone")  # as seen on the machine that indexed it
    info["source_root_relative"] = "../../gone"
    (bd.root / "build.json").write_text(__import__("json").dumps(info))

    lost = CliRunner().invoke(cli, ["caption", str(bd.root), "--backend", "template"])
    assert lost.exit_code == 2 and "pass --source-root DIR or set T2IVERW_SOURCE_ROOT" in lost.output
    found = CliRunner().invoke(cli, ["caption", str(bd.root), "--backend", "template", "--limit", "2",
                                     "--source-root", str(mount)])
    assert found.exit_code == 0, found.output
    monkeypatch.setenv("T2IVERW_SOURCE_ROOT", str(mount))
    assert CliRunner().invoke(cli, ["export", str(bd.root), "--out", str(tmp_path / "ds")]).exit_code == 0
    wrong = CliRunner().invoke(cli, ["export", str(bd.root), "--out", str(tmp_path / "ds2"), "--source-root",
                                     str(tmp_path / "nope")])
    assert wrong.exit_code == 2 and "is not a directory" in wrong.output


def test_a_second_index_or_export_into_the_same_place_is_refused(synth_root, tmp_path):
    import subprocess
    import sys

    build_index(synth_root, tmp_path / "build")
    make_split(tmp_path / "build", seed=0)
    hold = ("import sys, time\nfrom t2iverw.storage import exclusive\n"
            "with exclusive(sys.argv[1], 'busy'):\n    print('held', flush=True)\n    sys.stdin.readline()\n")
    for lock, args in ((tmp_path / "build" / ".index.lock", ["index", str(synth_root), "--out", str(tmp_path / "build")]),
                       (tmp_path / ".ds.lock", ["export", str(tmp_path / "build"), "--out", str(tmp_path / "ds")])):
        holder = subprocess.Popen([sys.executable, "-c", hold, str(lock)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 2 and "is writing" in result.output and result.output.count("\n") == 1
        finally:
            holder.stdin.close()
            holder.wait()
        assert CliRunner().invoke(cli, args).exit_code == 0, args  # free again once the holder is gone
