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


def test_grid_of_a_real_non_square_crop_resized_to_the_model_input():
    # A 200x100 crop (w x h) stretched to 384x384: one 16-px cell of the input is 8.33 x 4.17 px of the crop.
    # Part 0 covers x < 25, y < 50: 3 cells wide (25 * 384/200 = 48 px) and 12 cells high (50 * 384/100 = 192 px).
    masks = np.zeros((6, 100, 200), dtype=bool)
    masks[0, :50, :25] = True
    # Part 1 covers the right half of the crop's bottom quarter: columns 12-23, rows 18-23.
    masks[1, 75:, 100:] = True
    # Part 2 covers x < 6 (11.5 px of the input): cell 0 fully (on), cell 1 less than half (off).
    masks[2, :, :6] = True
    rec = _record(masks, grid=(24, 24), input_size=384, min_cover=0.5)
    cells = [unpack_grid(h, (24, 24)) for h in rec["grid"]["cells"]]
    expected = np.zeros((3, 24, 24), dtype=bool)
    expected[0, :12, :3] = True
    expected[1, 18:, 12:] = True
    expected[2, :, :1] = True
    for got, want in zip(cells, expected):
        np.testing.assert_array_equal(got, want)
    assert not any(c.any() for c in cells[3:])


def test_grid_with_a_rectangular_grid_and_a_tall_crop():
    # A 60x150 crop (w x h) stretched to a 96-px input. The mask covers the crop's top 25 px (16 px of
    # the input) and left 30 px (48 px of the input).
    masks = np.zeros((6, 150, 60), dtype=bool)
    masks[0, :25, :30] = True
    square = _record(masks, grid=(6, 6), input_size=96, min_cover=0.5)  # 16x16-px cells
    expected = np.zeros((6, 6), dtype=bool)
    expected[:1, :3] = True  # one row of 16 px, three columns of 16 px
    np.testing.assert_array_equal(unpack_grid(square["grid"]["cells"][0], (6, 6)), expected)
    tall = _record(masks, grid=(12, 6), input_size=96, min_cover=0.5)  # cells 8 px high, 16 px wide
    assert tall["grid"]["shape"] == [12, 6]
    expected = np.zeros((12, 6), dtype=bool)
    expected[:2, :3] = True  # 16 px is two rows of 8
    np.testing.assert_array_equal(unpack_grid(tall["grid"]["cells"][0], (12, 6)), expected)


def test_mask_areas_of_many_masks_despite_pycocotools_uint8_count():
    """pycocotools' area() overflows a uint8 holding the list length from 256 masks on (upstream, 2.0.11);
    the test asserts that upstream behaviour (so it fails once upstream is fixed), and that the report's area
    shares, batched around it, equal the decoded masks' pixel counts."""
    from t2iverw.constants import PARTS
    from t2iverw.report.load import _mask_shares

    rng = np.random.default_rng(0)
    decoded = rng.random((60, len(PARTS), 37, 53)) < rng.random((60, len(PARTS), 1, 1))  # 360 masks
    masks = [[{**r, "counts": r["counts"].decode()} for r in
              (coco_mask.encode(np.asfortranarray(m.astype(np.uint8))) for m in image)] for image in decoded]
    rles = [{**r, "counts": r["counts"].encode()} for image in masks for r in image]
    truth = decoded.sum(axis=(2, 3)).ravel()
    fixed = ("pycocotools.mask.area() of 360 masks gave the right areas: upstream fixed its uint8 list length "
             "(_mask.pyx); the batching in t2iverw/report/load.py _mask_shares can go, and this assertion with it")
    try:
        area = coco_mask.area(rles)
    except OverflowError as exc:  # NumPy 2 (here): the upstream behaviour the batching exists for
        assert "out of bounds for uint8" in str(exc), exc
    else:  # NumPy 1.x wraps the uint8 silently: 360 becomes 104 areas
        assert len(area) != len(rles) or not np.array_equal(area, truth), fixed
    assert np.array_equal(_mask_shares(masks), decoded.sum(axis=(2, 3)) / (37 * 53))
