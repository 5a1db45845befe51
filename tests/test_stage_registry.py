"""Stage types are registrations: recipes, the runner, cards and the CLI ask the registry, so a new stage type is one
module (here: one registration inside the test) and nothing else names a stage."""

import ast
import copy
from pathlib import Path

import pytest
import yaml
from tiny_assets import make_assets, run_cli, tiny_recipe

import hf_compress.stages.registry as registry
from hf_compress.cli import build_parser
from hf_compress.recipes import parse_recipe
from hf_compress.stages import StageSpec, UnknownStageError, get_stage, register_stage, stage_names
from hf_compress.validation import RecipeError

PACKAGE = Path(__file__).resolve().parent.parent / "hf_compress"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture
def scratch_stage():
    """Register a stage for one test and remove it afterwards."""
    added = []

    def add(spec):
        added.append(register_stage(spec).name)
        return spec

    yield add
    for name in added:
        registry._REGISTRY.entries.pop(name, None)


def test_the_shipped_stages_are_registered():
    assert stage_names() == ["distill", "evaluate", "finetune", "homodistil", "prune", "quantize", "sparsify"]
    assert get_stage("quantize").quantizes and get_stage("finetune").becomes_teacher
    trains = ["distill", "finetune", "homodistil", "prune", "sparsify"]
    assert [n for n in stage_names() if get_stage(n).trains] == trains


def test_the_registry_refuses_duplicates_bad_names_and_says_what_is_known():
    with pytest.raises(ValueError, match=r"stage 'distill' is already registered \(registered: \['distill'"):
        register_stage(StageSpec(name="distill", config_cls=None, run=None, help="x"))
    for bad in ("Distill", "a/b", "", "9x", "x" * 40):
        with pytest.raises(ValueError, match="is not valid"):
            register_stage(StageSpec(name=bad, config_cls=None, run=None, help="x"))
    with pytest.raises(ValueError, match="either trains or quantizes"):
        register_stage(StageSpec(name="both", config_cls=None, run=None, help="x", trains=True, quantizes=True))
    with pytest.raises(UnknownStageError, match=r"unknown method 'distil'; valid methods: \['distill'"):
        get_stage("distil")
    with pytest.raises(TypeError, match="takes a StageSpec"):
        register_stage({"name": "x"})


def test_a_recipe_with_an_unknown_method_lists_the_registered_ones(assets):
    raw = tiny_recipe(assets, {"method": "sparsfy"})
    with pytest.raises(RecipeError, match=r"stage 0: unknown method 'sparsfy'; valid methods: \['distill', "):
        parse_recipe(raw)


def test_a_new_stage_type_is_one_registration(assets, tmp_path, scratch_stage):
    """A registered stage runs through the recipe parser, the runner, the card and the CLI with no other change."""
    seen = []

    def run(ctx, stage, work_dir):
        seen.append((stage.name, stage.extras, work_dir.name))
        return copy.deepcopy(ctx.current)

    def check_extras(where, extras):
        if extras.get("copies", 1) < 1:
            raise RecipeError(f"{where}: copies must be >= 1")

    spec = StageSpec(name="identity", config_cls=None, run=run, extras={"copies": int}, check_extras=check_extras,
                     card_tags=("identity-copy",), help="copy the model")  # fmt: skip
    scratch_stage(spec)
    with pytest.raises(RecipeError, match=r"stage 0 \(identity\): copies must be >= 1"):
        parse_recipe(tiny_recipe(assets, {"method": "identity", "copies": 0}))
    with pytest.raises(RecipeError, match=r"unknown key\(s\) \['copy'\]"):
        parse_recipe(tiny_recipe(assets, {"method": "identity", "copy": 2}))
    raw = tiny_recipe(assets, {"method": "identity", "copies": 2}, {"name": "int8", "method": "quantize"})
    assert run_cli(tmp_path, raw) == 0
    assert seen == [("identity", {"copies": 2}, ".work-00-identity")]
    card = (tmp_path / "out" / "00-identity" / "README.md").read_text()
    assert "identity-copy" in yaml.safe_load(card.split("---")[1])["tags"]
    resolved = yaml.safe_load((tmp_path / "out" / "recipe.resolved.yaml").read_text())
    assert resolved["stages"][0] == {"method": "identity", "name": "identity", "copies": 2}
    commands = build_parser()._subparsers._group_actions[0].choices
    assert "identity" in commands and "finetune" not in commands  # a teacher-making stage is no command


def test_no_module_outside_the_stages_names_a_stage():
    """Recipes, runner, cards, CLI and validation ask the registry: no string literal there is a stage name."""
    names = set(stage_names())
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "stages" or relative.parts[0] in ("distill", "prune", "quant", "models", "data"):
            continue  # the stages themselves, and the methods they wrap (which know nothing of recipes)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{relative}:{node.lineno} {node.value!r}")
    # Not stage names: the Hub's base_model_relation value, the public function `quantize` in __all__, and the
    # benchmark suites of `hf-compress benchmark`.
    # The search (auto/) composes recipes of exactly these stages: its methods are those stages.
    allowed = {"card.py": {"finetune"}, "__init__.py": {"quantize"}, "cli.py": {"distill", "prune"},
               "auto/": {"homodistil", "quantize", "evaluate"}}  # fmt: skip

    def allowed_here(entry: str) -> set:
        file = entry.split(":")[0]
        return allowed.get(file, allowed.get(file.split("/")[0] + "/", set()))

    found = [f for f in found if f.split(" ")[1].strip("'") not in allowed_here(f)]
    assert not found, found
