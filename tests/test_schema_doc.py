"""annotations/schema.md must describe the real export Features, column for column."""

import re
from pathlib import Path

from t2iverw.schema import DESCRIPTIONS, features, type_string

DOC = Path(__file__).resolve().parents[1] / "annotations" / "schema.md"


def test_schema_doc_matches_features():
    rows = re.findall(r"^\| `([a-z_0-9]+)` \| `([^`]+)` \| (.+) \|$", DOC.read_text(), flags=re.M)
    feats = features(augmented=True)
    assert [r[0] for r in rows] == list(feats), "column names/order differ from t2iverw.schema.features()"
    for name, type_text, description in rows:
        assert type_text == type_string(feats[name]), f"type of {name}"
        assert description == DESCRIPTIONS[name], f"description of {name}"
