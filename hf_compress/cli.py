"""`hf-compress`: run recipes, single stages, benchmarks, and push results to the Hub.

hf-compress run recipes/quickstart.yaml --output-dir out [--set stages.homodistil.max_steps=50] [--force]
hf-compress run recipes/sst2-bert-base.yaml --dry-run          # check a recipe without downloading anything
hf-compress distill|homodistil|prune|quantize --config stage.yaml --output-dir out [--set key=value]
hf-compress evaluate --model DIR --config stage.yaml
hf-compress auto recipes/minilm-rt-auto.yaml --output-dir out --max-drop 3% --budget 2h   # search (Optuna)
hf-compress benchmark [distill|prune|quant|rnn|onnx] [--quick] # from a source checkout
hf-compress push out/02-quantize --repo-id me/minilm-rt-int8 [--private]
hf-compress export out/02-quantize --format onnx --output-dir out/02-quantize-onnx   # needs hf-compress[onnx]

A bad input ends with one line on stderr and exit code 2 (another failure: exit code 1); --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import yaml

from .recipes import RecipeError, apply_overrides, load_recipe, load_yaml, parse_recipe
from .stages import get_stage, stage_names
from .validation import find_secrets, looks_local

REQUIRED_FILES = ("config.json", "README.md")


def _dry_run(recipe) -> None:
    print(f"recipe {recipe.name!r}: teacher {recipe.teacher.source}, data {recipe.data.source}")
    for index, stage in enumerate(recipe.stages):
        config = stage.config(output_dir=f"<output>/{index:02d}-{stage.name}")
        print(
            f"  stage {index} {stage.name} ({stage.method}): {type(config).__name__ if config else 'measurements'} ok"
        )
    print(yaml.safe_dump(recipe.resolved(), sort_keys=False))


def _run(recipe, args) -> int:
    from .runner import run_recipe

    run_recipe(recipe, args.output_dir, force=args.force)
    print((Path(args.output_dir).expanduser() / "summary.md").read_text())
    return 0


def cmd_run(args) -> int:
    recipe = load_recipe(args.recipe, args.set)
    if recipe.auto is not None:  # a search recipe: `run` is `auto` with the recipe's own settings
        return _auto(recipe, args, {})
    if args.dry_run:
        _dry_run(recipe)
        return 0
    return _run(recipe, args)


AUTO_FLAGS = ("max_drop", "min_speedup", "max_latency_ms", "budget", "objective_shape", "runtimes", "methods")


def cmd_auto(args) -> int:
    recipe = load_recipe(args.recipe, args.set)
    flags = {name: getattr(args, name) for name in AUTO_FLAGS if getattr(args, name) is not None}
    for name in ("runtimes", "methods"):
        if name in flags:
            flags[name] = [part.strip() for part in flags[name].split(",") if part.strip()]
    return _auto(recipe, args, flags)


def _auto(recipe, args, flags: dict) -> int:
    from .auto import SearchConfig, run_search

    config = SearchConfig(**{**(recipe.auto or {}), **flags})
    if args.dry_run:
        print(f"search: the model that would {config.describe()}; budget {config.budget_s:.0f} s; runtimes "
              f"{config.runtimes}; methods {config.methods}")  # fmt: skip
        _dry_run(recipe)
        return 0
    summary = run_search(recipe, args.output_dir, config, force=args.force)
    print((Path(args.output_dir).expanduser() / "auto" / "pareto.md").read_text())
    if not summary["constraint"]["met"]:
        print(f"hf-compress: no candidate met the constraint ({config.describe()}); the most accurate one measured "
              "is in auto/model. Allow a larger drop or a larger --budget.", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def cmd_stage(args) -> int:
    """A one-stage recipe: the config file holds teacher / data (optional) and the stage's fields."""
    path = Path(args.config)
    if not path.is_file():
        raise RecipeError(f"--config {path} does not exist.")
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"--config {path}: not valid YAML ({err}).") from err
    except RecipeError as err:
        raise RecipeError(f"--config {path}: {err}") from err
    if not isinstance(raw, dict):
        raise RecipeError(f"--config {path}: expected a mapping of teacher, data and the stage's fields.")
    recipe_raw = {k: raw.pop(k) for k in ("name", "seed", "teacher", "data") if k in raw}
    spec = get_stage(args.command)
    if "method" in raw and raw["method"] != args.command:
        alias = spec.method_alias  # e.g. `method: int8_static` in a quantize config means quant_method
        if alias and raw["method"] not in stage_names() and alias not in raw:
            raw[alias] = raw.pop("method")
        else:
            hint = f" (the stage's own method key is {alias})" if alias else ""
            raise RecipeError(
                f"--config {path}: method {raw['method']!r} does not match the command {args.command!r}; remove "
                f"it{hint}."
            )
    raw.pop("method", None)
    recipe_raw["stages"] = [{"method": args.command, **raw}]
    if spec.takes_model:
        model = Path(args.model).expanduser()
        if not model.is_dir() and (looks_local(args.model) or model.exists()):
            raise RecipeError(f"--model {args.model} is not an existing model folder; fix the path.")
        teacher = recipe_raw.setdefault("teacher", {})
        if not isinstance(teacher, dict):
            raise RecipeError(f"--config {path}: teacher must be a mapping.")
        teacher["source"] = args.model
    recipe = parse_recipe(apply_overrides(recipe_raw, args.set), source_path=str(path))
    if args.dry_run:
        _dry_run(recipe)
        return 0
    return _run(recipe, args)


def check_push_folder(folder: str | Path) -> list[str]:
    """The files `push` would upload, after checking the folder is a complete stage output that loads."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder.")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    missing = [f for f in REQUIRED_FILES if f not in files]
    onnx_files = [f for f in files if f.endswith(".onnx")]  # an `hf-compress export` folder: no safetensors
    if not onnx_files and not any(f.endswith(".safetensors") for f in files):
        missing.append("*.safetensors weights")
    if missing:
        raise FileNotFoundError(f"{folder} is not a complete stage output: missing {missing}.")
    if any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files):
        raise ValueError(f"{folder} holds pickle files; only safetensors / JSON are pushed.")
    for name in files:  # JSON / YAML parsed, tokenizer vocabularies only searched for hf_ tokens (find_secrets)
        if name.endswith((".md", ".json", ".yaml", ".yml", ".txt", ".cfg", ".ini", ".env")):
            secrets = find_secrets((folder / name).read_text(errors="replace"), name)
            if secrets:
                raise ValueError(
                    f"{folder / name} looks like it holds a secret ({secrets[0]}); remove it before pushing "
                    "(hf-compress redacts tokens in what it writes; this file came from elsewhere)."
                )
    if onnx_files:
        from .export.onnx import check_onnx_folder

        check_onnx_folder(folder, onnx_files)  # loads, or raises
        return files
    config = json.loads((folder / "config.json").read_text())
    if "quantization_config" in config:
        import hf_compress  # noqa: F401  (registers the quantizer)
    import transformers

    architecture = (config.get("architectures") or ["AutoModel"])[0]
    getattr(transformers, architecture, transformers.AutoModel).from_pretrained(str(folder))  # loads, or raises
    return files


def cmd_push(args) -> int:
    files = check_push_folder(args.folder)
    from huggingface_hub import HfApi  # token from `hf auth login` / HF_TOKEN; never written anywhere

    api = HfApi()
    api.create_repo(args.repo_id, private=args.private, exist_ok=True)
    api.upload_folder(folder_path=str(args.folder), repo_id=args.repo_id, commit_message="Upload with hf-compress")
    print(f"pushed {len(files)} files to https://huggingface.co/{args.repo_id}")
    return 0


def cmd_export(args) -> int:
    from .export import ExportError, export_onnx
    from .export.onnx import default_output_dir

    output_dir = args.output_dir or default_output_dir(args.folder)
    try:
        report = export_onnx(args.folder, output_dir, dynamic_activations=args.dynamic_activations,
                             optimize=not args.no_optimize, num_samples=args.num_samples)  # fmt: skip
    except ExportError as err:
        print(f"hf-compress: error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.passed else 1


def cmd_benchmark(args) -> int:
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "__main__.py").is_file():
        raise RecipeError("hf-compress benchmark runs from a source checkout (it needs the benchmarks/ folder).")
    command = [sys.executable, "-m", "benchmarks", args.suite] + (["--quick"] if args.quick else [])
    return subprocess.call(command, cwd=root)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-compress", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, output=True):
        if output:
            p.add_argument("--output-dir", default="hf-compress-out", help="folder for every stage's output")
        p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                       help="override a recipe value, e.g. stages.distill.max_steps=100 (YAML value)")  # fmt: skip
        p.add_argument("--force", action="store_true", help="redo finished stages")
        p.add_argument("--dry-run", action="store_true", help="validate and print the resolved recipe; no training")
        p.add_argument("--debug", action="store_true", help="show the full traceback of an error")

    run = sub.add_parser("run", help="run a recipe end to end")
    run.add_argument("recipe")
    common(run)
    run.set_defaults(func=cmd_run)
    auto = sub.add_parser("auto", help="search for the fastest model within an accuracy (or latency) budget")
    auto.add_argument("recipe", help="a recipe with the teacher, the data and optionally finetune stages / auto:")
    auto.add_argument("--max-drop", dest="max_drop", help="accuracy the model may lose: '3%%' of the teacher or "
                      "1.5 (points)")  # fmt: skip
    auto.add_argument("--min-speedup", dest="min_speedup", type=float, help="speed-up over the teacher at --shape")
    auto.add_argument("--max-latency-ms", dest="max_latency_ms", type=float, help="milliseconds at --shape")
    auto.add_argument("--shape", dest="objective_shape", help="BATCHxLENGTH the speed is judged at (8x128)")
    auto.add_argument("--runtimes", help="comma list: torch,onnxruntime")
    auto.add_argument("--methods", help="comma list: homodistil,quantize (quantize alone: quantization only)")
    auto.add_argument("--budget", help="wall-clock budget: seconds, '90m' or '2h' (default 2h)")
    common(auto)
    auto.set_defaults(func=cmd_auto)
    for method in stage_names():
        spec = get_stage(method)
        if spec.becomes_teacher:  # a recipe's first stage (e.g. finetune), not a command of its own
            continue
        p = sub.add_parser(method, help=f"one stage: {spec.help}")
        p.add_argument("--config", required=True, help="YAML with teacher, data and the stage's fields")
        if spec.takes_model:
            p.add_argument("--model", required=True, help=f"the model folder to {method}")
        common(p)
        p.set_defaults(func=cmd_stage)
    bench = sub.add_parser("benchmark", help="run a benchmark suite (source checkout)")
    bench.add_argument("suite", nargs="?", default="distill", choices=["distill", "prune", "quant", "rnn", "onnx"])
    bench.add_argument("--quick", action="store_true")
    bench.set_defaults(func=cmd_benchmark)
    export = sub.add_parser("export", help="export a stage output to ONNX, verified on ONNX Runtime")
    export.add_argument("folder")
    export.add_argument("--format", choices=["onnx"], default="onnx")
    export.add_argument("--output-dir", default=None, help="default: FOLDER-onnx")
    export.add_argument("--dynamic-activations", choices=["torch", "ort"], default="torch",
                        help="int8_dynamic activations: as torch quantizes them (the export reproduces the PyTorch "
                        "model) or with ORT's fused 8-bit DynamicQuantizeLinear (faster)")  # fmt: skip
    export.add_argument(
        "--no-optimize",
        action="store_true",
        help="skip ORT's transformer fusions (a plain graph other ONNX tools can post-process)",
    )
    export.add_argument("--num-samples", type=int, default=128, help="rows the export is checked on (128)")
    export.set_defaults(func=cmd_export)
    push = sub.add_parser("push", help="upload a finished stage folder to the Hub")
    push.add_argument("folder")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--private", action="store_true")
    push.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    push.set_defaults(func=cmd_push)
    return parser


# Errors that come from what the user gave (a recipe, a path, the data): exit code 2, like argparse.
INPUT_ERRORS = (RecipeError, FileNotFoundError, NotADirectoryError, PermissionError, ValueError)


class _Progress(logging.Handler):
    """hf_compress's INFO and above on stderr while a command runs (stage progress, resumes, warnings): the stream is
    looked up per record, so a caller that swaps sys.stderr (pytest, a notebook) still sees it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("[hf-compress] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # pragma: no cover - a closed stream
            self.handleError(record)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    library = logging.getLogger("hf_compress")
    handler = None if library.handlers else _Progress()  # a caller's own logging setup is left alone
    if handler is not None:
        library.addHandler(handler)
        previous = library.level
        library.setLevel(min(previous or logging.INFO, logging.INFO))
    try:
        return _main(args)
    finally:
        if handler is not None:
            library.removeHandler(handler)
            library.setLevel(previous)


def _main(args) -> int:
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("hf-compress: interrupted; re-run the same command to resume.", file=sys.stderr)
        return 130
    except Exception as err:
        if getattr(args, "debug", False):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        code = 2 if isinstance(err, INPUT_ERRORS) else 1
        prefix = "" if isinstance(err, INPUT_ERRORS) else f"{type(err).__name__}: "
        print(f"hf-compress: error: {prefix}{message} (--debug shows the traceback)", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
