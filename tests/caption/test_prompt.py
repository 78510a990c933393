"""The caption prompt: shipped template, hints, hash, swapping the file."""

import pytest

from t2iverw.caption.prompt import load_prompt
from t2iverw.errors import T2IError

META = {"color": "red", "type": "sedan", "model": "Aurex-Nova"}


def test_shipped_prompt_names_the_attributes_and_forbids_plates():
    prompt = load_prompt()
    text = prompt.render(META).lower()
    for word in ("50 words", "grille", "headlights", "tail lights", "wheels", "roof", "windows", "bumper",
                 "mirrors", "stickers", "license plate"):
        assert word in text
    assert "{hints}" not in text
    assert len(prompt.sha256) == 64


def test_default_hints_are_what_a_witness_sees_and_the_model_name_only_on_request():
    witness = load_prompt().render(META)
    assert "colour: red; type: sedan." in witness and "Aurex" not in witness
    assert "colour: red; type: sedan; model: Aurex-Nova" in load_prompt(hints="model").render(META)
    assert "sedan" not in load_prompt(hints="none").render(META)
    assert "model" not in load_prompt(hints="model").render({"color": "red", "type": "sedan", "model": None}).split("Metadata")[1]


def test_unknown_hint_mode_is_a_clear_error():
    with pytest.raises(T2IError, match="--hints must be one of none, witness, model"):
        load_prompt(hints="all")


def test_custom_prompt_file_changes_text_and_hash(tmp_path):
    path = tmp_path / "p.md"
    path.write_text("Describe the car briefly.\n")
    custom = load_prompt(path)
    assert custom.render(META).startswith("Describe the car briefly.\nMetadata")
    assert custom.sha256 != load_prompt().sha256


def test_empty_or_missing_prompt_file_is_a_clear_error(tmp_path):
    (tmp_path / "empty.md").write_text("  \n")
    with pytest.raises(T2IError, match="empty"):
        load_prompt(tmp_path / "empty.md")
    with pytest.raises(T2IError, match="cannot read prompt file"):
        load_prompt(tmp_path / "missing.md")
