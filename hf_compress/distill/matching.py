"""Which student layer learns from which teacher layer, and the projections between their widths."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

EMBEDDING_KEY = "embedding"
# Set by `make_student` on the student's config: {"layers": [teacher layer of each student layer], "num_layers": T}.
# A plain JSON-serialisable config attribute, so it survives save_pretrained / from_pretrained untouched.
TEACHER_LAYERS_ATTR = "hf_compress_teacher_layers"


@dataclass(frozen=True)
class LayerMapSpec:
    """A parsed ``layer_map``: a named strategy, or explicit (student, teacher) layer pairs (0-based)."""

    strategy: str | None = None  # "auto" | "uniform" | "last"
    pairs: tuple[tuple[int, int], ...] | None = None  # explicit student -> teacher pairs
    teacher_layers: tuple[int, ...] | None = None  # one teacher layer per student layer


_STRATEGIES = ("auto", "uniform", "last")


def _bad_layer_map(value: object) -> ValueError:
    return ValueError(
        f"layer_map={value!r} is not understood. Use 'auto', 'uniform', 'last', one 0-based teacher layer per "
        "student layer (e.g. [1, 3, 5] or '1,3,5'), or student:teacher pairs (e.g. [[0, 1], [2, 5]] or '0:1,2:5')."
    )


def parse_layer_map(value: str | list | tuple) -> LayerMapSpec:
    """Parse the user's ``layer_map`` (config value or CLI string) without knowing the models yet."""
    if isinstance(value, str):
        text = value.strip()
        if text in _STRATEGIES:
            return LayerMapSpec(strategy=text)
        try:
            if ":" in text:
                items = [tuple(int(x) for x in part.split(":")) for part in text.split(",")]
            else:
                items = [int(part) for part in text.split(",")]
        except ValueError:
            raise _bad_layer_map(value) from None
        value = items
    if not isinstance(value, (list, tuple)) or not value:
        raise _bad_layer_map(value)
    if all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return LayerMapSpec(teacher_layers=tuple(value))
    if all(isinstance(x, (list, tuple)) and len(x) == 2 and all(isinstance(i, int) for i in x) for x in value):
        pairs = tuple((int(s), int(t)) for s, t in value)
        students = [s for s, _ in pairs]
        if len(set(students)) != len(students):
            raise ValueError(
                f"layer_map={value!r} maps a student layer twice; give each student layer one teacher layer."
            )
        return LayerMapSpec(pairs=pairs)
    raise _bad_layer_map(value)


def recorded_teacher_layers(config) -> dict | None:
    """The teacher layers `make_student` recorded on a student's config, or None."""
    record = getattr(config, TEACHER_LAYERS_ATTR, None)
    return record if isinstance(record, dict) else None


def _usable_record(record: dict | None, s_layers: int, t_layers: int) -> list[int] | None:
    """The recorded teacher layers when they describe *this* teacher (same depth) and this student."""
    if not record:
        return None
    layers, depth = record.get("layers"), record.get("num_layers")
    if depth != t_layers or not isinstance(layers, list) or len(layers) != s_layers:
        return None  # e.g. a HomoDistil copy of a student: its record names its own teacher's layers
    if not all(isinstance(i, int) and 0 <= i < t_layers for i in layers):
        return None
    return layers


def resolve_layer_map(
    spec: LayerMapSpec,
    num_student_layers: int,
    num_teacher_layers: int,
    recorded: dict | None = None,
    ends_at_last: bool = False,
) -> list[tuple[int, int]]:
    """(student_layer, teacher_layer) pairs, 0-based, checked against both models' depths.

    ``uniform`` maps student layer i to teacher layer ``(i + 1) * T // S - 1`` (TinyBERT's skip map: a
    3-layer student of a 6-layer teacher learns from teacher layers 1, 3, 5); ``last`` maps it to
    ``T - S + i``; ``auto`` (the default) maps each student layer to the teacher layer it was copied from when
    ``recorded`` (`make_student`'s record on the student config) describes this teacher, else as ``uniform``;
    with ``ends_at_last`` (a student without a task head: its last states are what it is used for, an embedding)
    ``auto`` maps the student's last layer to the teacher's last layer whatever it was copied from.
    """
    s_layers, t_layers = num_student_layers, num_teacher_layers
    if spec.strategy == "auto":
        layers = _usable_record(recorded, s_layers, t_layers)
        if layers is not None:
            return list(enumerate(layers[:-1] + [t_layers - 1] if ends_at_last else layers))
        spec = LayerMapSpec(strategy="uniform")
    if spec.strategy is not None:
        if s_layers > t_layers:
            raise ValueError(
                f"layer_map={spec.strategy!r} needs a student no deeper than the teacher, got {s_layers} student "
                f"and {t_layers} teacher layers; give an explicit layer_map instead."
            )
        if spec.strategy == "uniform":
            return [(i, (i + 1) * t_layers // s_layers - 1) for i in range(s_layers)]
        return [(i, t_layers - s_layers + i) for i in range(s_layers)]
    if spec.teacher_layers is not None:
        if len(spec.teacher_layers) != s_layers:
            raise ValueError(
                f"layer_map lists {len(spec.teacher_layers)} teacher layers but the student has {s_layers} layers; "
                "give one teacher layer per student layer, or student:teacher pairs."
            )
        pairs = list(enumerate(spec.teacher_layers))
    else:
        pairs = list(spec.pairs)
    for s, t in pairs:
        if not 0 <= s < s_layers:
            raise ValueError(f"layer_map student layer {s} is out of range: the student has layers 0..{s_layers - 1}.")
        if not 0 <= t < t_layers:
            raise ValueError(f"layer_map teacher layer {t} is out of range: the teacher has layers 0..{t_layers - 1}.")
    return pairs


class Projections(nn.Module):
    """Learned ``Linear(student_width, teacher_width)`` maps, one per matched layer and for the embeddings.

    Keys are the student layer index as a string, and ``"embedding"``. ``forward`` projects every state it is
    given in one call (one DDP forward per step) and passes through states without a projection.
    """

    def __init__(self, keys: list[str], student_width: int, teacher_width: int) -> None:
        super().__init__()
        self.maps = nn.ModuleDict({key: nn.Linear(student_width, teacher_width) for key in keys})

    def __len__(self) -> int:
        return len(self.maps)

    def forward(self, states: dict[str, Tensor]) -> dict[str, Tensor]:
        return {key: self.maps[key](h) if key in self.maps else h for key, h in states.items()}


def build_projections(
    pairs: list[tuple[int, int]], student_width: int, teacher_width: int, *, hidden: bool, embedding: bool
) -> Projections:
    """Projections for the matched layers (``hidden``) and the embeddings (``embedding``) when widths differ.

    Empty when the widths are equal: the student's states are then compared as they are.
    """
    keys: list[str] = []
    if student_width != teacher_width:
        keys = [str(s) for s, _ in pairs] if hidden else []
        if embedding:
            keys.append(EMBEDDING_KEY)
    return Projections(keys, student_width, teacher_width)


def check_kept_layers(layers: list, num_layers: int, who: str) -> None:
    """The layers a student keeps of its source: a non-empty, strictly increasing list of ints in range (``who``
    names the function in the message)."""
    if not layers:
        raise ValueError(f"{who} needs at least one layer to keep, e.g. layers=[0, 2, 4].")
    if any(not isinstance(i, int) or isinstance(i, bool) for i in layers):
        raise TypeError(f"{who} layers must be ints, got {layers!r}.")
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f"{who} layers {bad} are out of range: the teacher has layers 0..{num_layers - 1}.")
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"{who} layers must be strictly increasing (no repeats), got {layers}.")
