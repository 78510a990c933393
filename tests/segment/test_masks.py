import numpy as np
from pycocotools import mask as coco_mask

from t2iverw.grid import unpack_grid
from t2iverw.segment.masks import part_record
from t2iverw.segment.model import PartMasks


def _record(masks: np.ndarray, **kw) -> dict:
    parts = PartMasks(masks=masks, scores=[0.9] * len(masks), instances=[int(m.any()) for m in masks])
    return part_record("img", parts, **kw)


def test_rle_decodes_with_pycocotools_to_the_stored_mask():
    rng = np.random.default_rng(0)
    masks = rng.random((6, 37, 53)) > 0.6
    masks[5] = False
    rec = _record(masks, grid=(24, 24), input_size=384, min_cover=0.5)
    for mask, rle in zip(masks, rec["masks"]):
        assert rle["size"] == [37, 53]
        decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), mask)
    assert rec["area"][5] == 0.0 and rec["instances"][5] == 0
    assert abs(rec["area"][0] - masks[0].mean()) < 1e-4


def test_grid_cell_is_on_when_the_part_covers_at_least_min_cover_of_it():
    # 8x8 image -> input 8 -> 2x2 grid of 4x4 cells; each part fills a known share of cell (0, 0).
    masks = np.zeros((6, 8, 8), dtype=bool)
    masks[0, :4, :4] = True  # full cell
    masks[1, :2, :4] = True  # half of the cell
    masks[2, :1, :4] = True  # a quarter
    masks[3, :, :] = True  # everything
    masks[4, 4:, :4] = True  # full bottom-left cell
    rec = _record(masks, grid=(2, 2), input_size=8, min_cover=0.5)
    cells = [unpack_grid(h, (2, 2)) for h in rec["grid"]["cells"]]
    np.testing.assert_array_equal(cells[0], [[1, 0], [0, 0]])
    np.testing.assert_array_equal(cells[1], [[1, 0], [0, 0]])
    np.testing.assert_array_equal(cells[2], [[0, 0], [0, 0]])
    np.testing.assert_array_equal(cells[3], [[1, 1], [1, 1]])
    np.testing.assert_array_equal(cells[4], [[0, 0], [1, 0]])
    np.testing.assert_array_equal(cells[5], [[0, 0], [0, 0]])
    assert rec["grid"] | {"cells": None} == {"shape": [2, 2], "input_size": 8, "min_cover": 0.5, "cells": None}
    stricter = _record(masks, grid=(2, 2), input_size=8, min_cover=0.75)
    assert not unpack_grid(stricter["grid"]["cells"][1], (2, 2)).any()
