"""Caption QA rules on hand-written captions."""

import pytest

from t2iverw.caption.qa import qa_flags, reply_problem

GOOD = (
    "A white SUV with a wide chrome grille and slim swept-back headlights. The tail lights are thin red bars. "
    "It rides on silver five-spoke alloy wheels and carries black roof rails and a small sunroof. The rear "
    "windows are tinted, the front bumper has fog lamps, and a round sticker sits on the windshield."
)
META = {"color": "white", "type": "SUV"}


def test_a_complete_caption_has_no_flags():
    assert qa_flags(GOOD, META) == []


def test_length_limits():
    assert "too_short" in qa_flags("A white SUV with roof rails, tinted windows, round lights and alloy wheels.", META)
    assert "too_long" in qa_flags(GOOD + " " + GOOD.replace("white", "pale"), META)


@pytest.mark.parametrize(
    "drop, family",
    [(("headlights", "tail lights", "fog lamps"), "lights"), (("five-spoke alloy wheels",), "wheels"),
     (("rear windows", "windshield"), "windows"), (("roof rails", "sunroof"), "roof")],
)
def test_missing_attribute_family(drop, family):
    text = GOOD
    for phrase in drop:
        text = text.replace(phrase, "trim")
    flags = qa_flags(text, META)
    assert f"missing_{family}" in flags
    assert [f for f in flags if f.startswith("missing_")] == [f"missing_{family}"]


def test_colour_contradiction_but_not_synonyms_or_unknown_colours():
    assert "colour_mismatch" in qa_flags(GOOD.replace("A white SUV", "A blue SUV"), META)
    grey = GOOD.replace("A white SUV", "A grey SUV")
    assert "colour_mismatch" not in qa_flags(grey, {"color": "gray", "type": "SUV"})
    assert "colour_mismatch" not in qa_flags(GOOD, {"color": "teal", "type": "SUV"})


def test_type_contradiction():
    assert "type_mismatch" in qa_flags(GOOD.replace("SUV", "sedan"), META)
    pickup = {"color": "white", "type": "pickup truck"}
    assert "type_mismatch" not in qa_flags(GOOD.replace("SUV", "pickup truck"), pickup)
    assert "type_mismatch" not in qa_flags(GOOD.replace("SUV", "truck"), pickup)
    assert "type_mismatch" in qa_flags(GOOD.replace("SUV", "hatchback"), pickup)
    assert "type_mismatch" not in qa_flags(GOOD.replace("SUV", "sedan"), {"color": "white", "type": "tank car"})


def test_refusal_boilerplate_and_repetition():
    assert "refusal" in qa_flags("I'm sorry, I cannot describe this vehicle. " + GOOD, META)
    assert "boilerplate" in qa_flags("The image shows " + GOOD[0].lower() + GOOD[1:], META)
    looped = GOOD + " The wheels are silver. The wheels are silver. The wheels are silver. The wheels are silver. The wheels are silver."
    assert "repetitive" in qa_flags(looped, META)


@pytest.mark.parametrize(
    "text, finish, problem",
    [("", "stop", "empty"), ("   ", "stop", "empty"), (GOOD, "length", "cut_off"),
     ("I'm sorry, but I can't help with identifying this.", "stop", "refusal"),
     ("red red red red red red red red red red red red red red", "stop", "repetitive"),
     ("白白白白白白白白白白白白", "stop", "repetitive"), (GOOD, "stop", None)],
)
def test_reply_problem(text, finish, problem):
    assert reply_problem(text, finish) == problem
