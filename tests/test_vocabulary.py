"""The one vocabulary: units, channel choices and class names read the same everywhere."""

import pytest

from fmapviz.vocabulary import Unit, class_index, is_unit, parse_channels, parse_unit


@pytest.mark.parametrize(
    "text, unit",
    [
        ("features.10[17]", Unit("features.10", 17)),
        ("features.10[17,7,7]", Unit("features.10", 17, (7, 7))),
        ("features.10[17, center]", Unit("features.10", 17, "center")),
        ("layer4.1.relu#2[5]", Unit("layer4.1.relu#2", 5)),
        ("backbone:0[3]", Unit("backbone:0", 3)),
    ],
)
def test_unit_notation_round_trips_through_str(text, unit):
    assert parse_unit(text) == unit
    assert parse_unit(str(unit)) == unit


@pytest.mark.parametrize("text", ["features.10", "backbone:0", "features.10:17", "features.10[]", "a[1,2]", "a[-1]"])
def test_non_units_are_refused_or_not_units(text):
    if is_unit(text):
        with pytest.raises(ValueError, match="unit"):
            parse_unit(text)
    else:
        with pytest.raises(ValueError, match=r"layer\[channel\]"):
            parse_unit(text)


def test_pyramid_and_call_keys_are_not_units():
    assert not is_unit("backbone:0") and not is_unit("layer1.0.relu#2") and is_unit("backbone:0[1]")


@pytest.mark.parametrize(
    "value, kind, count, indices",
    [
        ("all", "all", 0, ()),
        ("top:8", "top", 8, ()),
        ("bottom:2", "bottom", 2, ()),
        ("0-3,7", "indices", 0, (0, 1, 2, 3, 7)),
        ("-1", "indices", 0, (-1,)),
        (5, "indices", 0, (5,)),
        (range(3), "indices", 0, (0, 1, 2)),
    ],
)
def test_channels_always_mean_which_channels(value, kind, count, indices):
    choice = parse_channels(value)
    assert (choice.kind, choice.count, choice.indices) == (kind, count, indices)


@pytest.mark.parametrize(
    "value, message", [("top:0", "no channels"), ("5-2", "backwards"), ("x", "integer"), ([], "empty")]
)
def test_bad_channel_choices_name_the_problem(value, message):
    with pytest.raises(ValueError, match=message):
        parse_channels(value)


def test_class_names_match_case_insensitively_and_suggest():
    names = ["goldfish", "tabby", "Egyptian cat"]
    assert class_index("TABBY", names) == 1 and class_index("egyptian cat", names) == 2 and class_index("2", names) == 2
    with pytest.raises(ValueError, match="Closest: tabby"):
        class_index("tabbi", names)
    with pytest.raises(ValueError, match="negative"):
        class_index(-1, names)
    with pytest.raises(ValueError, match="out of range"):
        class_index(3, names)
