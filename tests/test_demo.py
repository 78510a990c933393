import datasets
from click.testing import CliRunner

from t2iverw.cli import cli


def test_demo_builds_a_loadable_dataset(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path), "--ids", "6"])
    assert result.exit_code == 0, result.output
    assert "[1] synth" in result.output and "load_dataset" in result.output
    ds = datasets.load_dataset(str(tmp_path / "dataset"))
    assert ds["train"].num_rows + ds["test"].num_rows > 0
    assert not set(ds["train"]["vehicle_id"]) & set(ds["test"]["vehicle_id"])
