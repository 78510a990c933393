import pytest
import yaml

from t2iverw.constants import PARTS
from t2iverw.errors import T2IError
from t2iverw.segment.prompts import load_parts


def test_shipped_parts_file_names_the_six_parts_in_order_with_several_prompts():
    parts = load_parts()
    assert [p.name for p in parts] == list(PARTS)
    assert all(len(p.prompts) >= 3 and 0 < p.threshold < 1 for p in parts)
    assert "windshield" in parts[0].prompts
    assert parts[0].text == "Car windows"


def test_parts_file_in_another_order_is_refused(tmp_path):
    cats = [{"name": p, "threshold": 0.5, "prompts": [p]} for p in reversed(PARTS)]
    path = tmp_path / "parts.yaml"
    path.write_text(yaml.safe_dump({"categories": cats}))
    with pytest.raises(T2IError, match="in that order"):
        load_parts(path)


def test_category_without_prompts_is_refused(tmp_path):
    cats = [{"name": p, "threshold": 0.5, "prompts": [p] if p != "roof" else []} for p in PARTS]
    path = tmp_path / "parts.yaml"
    path.write_text(yaml.safe_dump({"categories": cats}))
    with pytest.raises(T2IError, match="'roof' needs a non-empty list"):
        load_parts(path)
