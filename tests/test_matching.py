import pytest

from hf_compress.distill.matching import build_projections, parse_layer_map, resolve_layer_map


@pytest.mark.parametrize(
    "value, s, t, expected",
    [
        ("uniform", 3, 6, [(0, 1), (1, 3), (2, 5)]),
        ("uniform", 2, 12, [(0, 5), (1, 11)]),
        ("uniform", 4, 4, [(0, 0), (1, 1), (2, 2), (3, 3)]),
        ("last", 2, 6, [(0, 4), (1, 5)]),
        ([0, 2, 5], 3, 6, [(0, 0), (1, 2), (2, 5)]),
        ("1,3,5", 3, 6, [(0, 1), (1, 3), (2, 5)]),
        ("0:1,2:5", 3, 6, [(0, 1), (2, 5)]),
        ([[1, 4]], 2, 6, [(1, 4)]),
    ],
)
def test_layer_maps_resolve(value, s, t, expected):
    assert resolve_layer_map(parse_layer_map(value), s, t) == expected


@pytest.mark.parametrize("value", ["every_other", "", "1,x", [], [[0, 1, 2]], [True, False], 3])
def test_unparseable_layer_map_is_an_error(value):
    with pytest.raises(ValueError, match="layer_map"):
        parse_layer_map(value)


def test_layer_map_maps_student_layer_twice():
    with pytest.raises(ValueError, match="maps a student layer twice"):
        parse_layer_map("0:1,0:2")


@pytest.mark.parametrize(
    "value, message",
    [
        ([0, 1, 6], "teacher layer 6 is out of range: the teacher has layers 0..5"),
        ("3:1", "student layer 3 is out of range: the student has layers 0..2"),
        ([0, 1], "lists 2 teacher layers but the student has 3 layers"),
    ],
)
def test_layer_map_out_of_range(value, message):
    with pytest.raises(ValueError, match=message):
        resolve_layer_map(parse_layer_map(value), 3, 6)


def test_strategy_needs_student_no_deeper_than_teacher():
    with pytest.raises(ValueError, match="no deeper than the teacher"):
        resolve_layer_map(parse_layer_map("uniform"), 6, 3)


def test_projections_only_when_widths_differ():
    pairs = [(0, 1), (1, 3)]
    assert len(build_projections(pairs, 32, 32, hidden=True, embedding=True)) == 0
    proj = build_projections(pairs, 16, 32, hidden=True, embedding=True)
    assert sorted(proj.maps.keys()) == ["0", "1", "embedding"]
    assert proj.maps["0"].in_features == 16 and proj.maps["0"].out_features == 32
