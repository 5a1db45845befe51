"""The "Supported models" table of README.md, generated from the family table that tests/test_families.py checks
cell by cell (every "yes" there trains / quantizes / reloads, every "no" is the refusal the test asserts).

``python -m hf_compress.models.support`` prints it; ``--write README.md`` replaces the block between the markers.
"""

from __future__ import annotations

import argparse
import re
import sys

from ..quant.kinds import method_names
from .families import FAMILIES, Family

BEGIN, END = "<!-- supported-models:begin -->", "<!-- supported-models:end -->"
HEADS = {"text": "sequence / token classification, question answering, masked LM", "vision": "image classification"}


def columns() -> tuple[str, ...]:
    """The table's header; the quantization column counts the registered methods (`quant.kinds.method_names`)."""
    return (
        "Family (model types)",
        "Heads",
        "Prediction KD",
        "Hidden / embedding KD",
        "Attention KD",
        "make_student",
        "HomoDistil",
        f"Quantization ({len(method_names())} methods)",
        "Reload / pipeline()",
    )


def _cell(reason: str | None, yes: str = "yes") -> str:
    return yes if reason is None else "no"


def row(family: Family) -> list[str]:
    prune = _cell(family.prune)
    if family.prune is None and family.head_prune is not None:
        prune = "hidden + FFN (no heads)"
    return [
        f"{family.name} (`{'`, `'.join(family.model_types)}`)",
        HEADS[family.modality],
        "yes",
        _cell(family.hidden_kd),
        _cell(family.attention_kd),
        _cell(family.student),
        prune,
        "yes" if not family.not_quantizable else f"yes (float: `{'`, `'.join(family.not_quantizable)}`)",
        "yes",
    ]


def reasons() -> list[str]:
    """One footnote per refusal, in the words the refusal raises."""
    notes = []
    for family in FAMILIES:
        for what, reason in (
            ("hidden KD", family.hidden_kd),
            ("attention KD", family.attention_kd),
            ("make_student", family.student),
            ("HomoDistil", family.prune),
            ("head pruning", family.head_prune),
        ):
            if reason is not None:
                notes.append(f"- {family.name}, {what}: {reason}.")
    return notes


def support_table() -> str:
    header = columns()
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row(family)) + " |" for family in FAMILIES]
    return "\n".join([BEGIN, *lines, "", *reasons(), END])


def update(text: str) -> str:
    """``text`` with the block between the markers replaced by the current table."""
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"No {BEGIN} ... {END} block found; add the two markers where the table belongs.")
    return pattern.sub(lambda _: support_table(), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", metavar="README", help="rewrite the table block inside this file")
    args = parser.parse_args(argv)
    if args.write:
        with open(args.write) as handle:
            text = handle.read()
        with open(args.write, "w") as handle:
            handle.write(update(text))
    else:
        sys.stdout.write(support_table() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
