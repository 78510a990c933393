"""The release's 24x24 grids and part files, read on the fast path (bytes() per row, orjson) and
judged exactly as json and numpy judge them: same grids, same reasons."""

from __future__ import annotations

import json

import numpy as np
import pytest

from t2iverw.release.layout import BadRecord, grid, read_part_file

PARTS = ("windows", "lights", "wheels", "mirrors", "roof", "doors")  # the loader's order


def _write(path, content: str):
    path.write_text(content)
    return path


def test_part_file_grids_are_or_merged_in_part_order(tmp_path):
    rng = np.random.default_rng(0)
    a, b, c = (rng.random((3, 24, 24)) < 0.3)
    instances = [{"category": "roof", "mask": a.astype(int).tolist()},
                 {"category": "windows", "mask": b.tolist()},  # true/false cells are 1/0 too
                 {"category": "roof", "mask": c.astype(int).tolist(), "score": 0.5}]
    grids = read_part_file(_write(tmp_path / "p.json", json.dumps(instances)), "record 0")
    assert grids.shape == (6, 24, 24) and grids.dtype == bool
    assert np.array_equal(grids[PARTS.index("roof")], a | c)
    assert np.array_equal(grids[PARTS.index("windows")], b)
    assert not grids[[PARTS.index(p) for p in PARTS if p not in ("roof", "windows")]].any()


def test_an_empty_part_file_names_no_part(tmp_path):
    grids = read_part_file(_write(tmp_path / "p.json", "[]"), "record 0")
    assert grids.shape == (6, 24, 24) and not grids.any()


@pytest.mark.parametrize("text", ['[{"category": "roof", "mask": [[NaN]]}]', "[1, 2", '{"a": 1} x', "\ufeff[]"])
def test_an_unreadable_part_file_gets_jsons_reason(tmp_path, text):
    path = _write(tmp_path / "p.json", text)
    try:
        json.loads(path.read_text(encoding="utf-8"))
        expected = None
    except json.JSONDecodeError as exc:
        expected = f"record 3: part file p.json is unreadable ({exc})"
    with pytest.raises(BadRecord) as caught:
        read_part_file(path, "record 3")
    if expected is not None:
        assert str(caught.value) == expected
    else:  # json reads it (NaN): then the grid is what is wrong
        assert "not a 24x24 grid" in str(caught.value)


def test_a_huge_integer_category_is_named_as_json_reads_it(tmp_path):
    path = _write(tmp_path / "p.json", '[{"category": 99999999999999999999999, "mask": []}]')
    with pytest.raises(BadRecord, match="category 99999999999999999999999, not one of windows"):
        read_part_file(path, "record 0")


@pytest.mark.parametrize("cell, reason", [(2, "not binary"), (-1, "not binary"), (1.0, "not binary"),
                                          ("1", "not binary"), (None, "not binary"), ([1], "24x24")])
def test_a_bad_cell_is_refused_with_its_reason(cell, reason):
    value = [[0] * 24 for _ in range(24)]
    value[5][7] = cell
    with pytest.raises(BadRecord, match=reason):
        grid(value, "record 0: mask")


@pytest.mark.parametrize("value", [[[0] * 24] * 23, [[0] * 23] * 24, [[0] * 24] * 23 + [5], "x", None])
def test_a_grid_of_the_wrong_shape_is_refused(value):
    with pytest.raises(BadRecord, match="is not a 24x24 grid"):
        grid(value, "record 0: mask")


def test_a_good_grid_reads_as_its_cells():
    cells = np.random.default_rng(1).random((24, 24)) < 0.5
    out = grid(cells.astype(int).tolist(), "record 0: mask")
    assert out.dtype == bool and np.array_equal(out, cells)
