"""BuildDir.image_shas: the log writers' image_id -> sha256 lookup, held as sorted arrays."""

from __future__ import annotations

import pyarrow as pa
import pytest

from t2iverw.build import ImageShas


def test_image_shas_look_up_like_a_dict_of_the_rows():
    table = pa.table({"image_id": ["0003", "0001", "00010", "0002", "0001"],
                      "sha256": ["c", "a-old", "j", None, "a"]})
    shas = ImageShas(table)
    assert [shas[i] for i in ("0001", "0002", "0003", "00010")] == ["a", None, "c", "j"]  # a repeated id: its last row
    assert len(shas) == 4 and list(shas) == ["0001", "00010", "0002", "0003"]
    assert shas.get("0004") is None and "000" not in shas and "00011" not in shas and 1 not in shas
    with pytest.raises(KeyError):
        shas["00100"]  # longer than every stored id


def test_image_shas_of_an_empty_index():
    shas = ImageShas(pa.table({"image_id": pa.array([], pa.string()), "sha256": pa.array([], pa.string())}))
    assert len(shas) == 0 and shas.get("0001") is None
