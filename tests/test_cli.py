"""The CLI as a user meets it: every stage listed, one-line errors with exit code 2."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from t2iverw.cli import cli

STAGES = ("synth", "index", "caption", "caption-qa", "segment", "segment-eval", "show", "split", "export",
          "eval", "train", "predict", "demo")


def test_help_lists_every_stage():
    out = CliRunner().invoke(cli, ["--help"]).output
    missing = [s for s in STAGES if f"  {s} " not in out]
    assert not missing, f"--help does not list {missing}"


def _run(*args):
    return subprocess.run([sys.executable, "-m", "t2iverw.cli", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("args, message", [
    (("split", "{tmp}/nowhere"), "is not a build directory"),
    (("export", "{tmp}/nowhere", "--out", "{tmp}/ds"), "is not a build directory"),
    (("index", "{tmp}/nowhere", "--out", "{tmp}/b"), "does not exist"),
    (("synth", "{tmp}/s", "--per-id", "5:2"), "MIN <= MAX"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = _run(*(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len([l for l in result.stderr.splitlines() if l.startswith("Error")]) == 1


def test_split_without_split_then_export(build_dir, tmp_path):
    (build_dir / "split.json").unlink()
    result = _run("export", build_dir, "--out", tmp_path / "ds")
    assert result.returncode == 2 and "run `t2iverw split" in result.stderr


def test_dataset_commands_end_to_end(tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["synth", str(tmp_path / "src"), "--ids", "4", "--per-id", "2:3"]).exit_code == 0
    res = runner.invoke(cli, ["index", str(tmp_path / "src"), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0 and "of 4 identities" in res.output
    res = runner.invoke(cli, ["split", str(tmp_path / "b")])
    assert res.exit_code == 0 and "train: 3 identities" in res.output and "test: 1 identities" in res.output
    res = runner.invoke(cli, ["export", str(tmp_path / "b"), "--out", str(tmp_path / "ds")])
    assert res.exit_code == 0 and "load_dataset" in res.output
    assert list((tmp_path / "ds" / "data").glob("train-00000-of-00001.parquet"))
