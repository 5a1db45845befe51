"""`python -m benchmarks <suite> [options]`: run one benchmark suite."""

import sys

SUITES = {
    "distill": "benchmarks.distill",
    "quant": "benchmarks.quant",
    "prune": "benchmarks.prune",
    "report": "benchmarks.report",
    "rnn": "benchmarks.rnn",
    "onnx": "benchmarks.onnx",
    "recipes": "benchmarks.recipes",
    "auto": "benchmarks.auto",
    "deit": "benchmarks.deit",
    "vision-teachers": "benchmarks.vision_teachers",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in SUITES:
        print(f"usage: python -m benchmarks {{{','.join(SUITES)}}} [--quick] [suite options]", file=sys.stderr)
        raise SystemExit(2)
    import importlib

    importlib.import_module(SUITES[sys.argv[1]]).main(sys.argv[2:])


if __name__ == "__main__":
    main()
