"""The package reads like the pipeline: each layer imports only those below it, and there are no import circles."""

import ast
from pathlib import Path

import harness

PACKAGE = Path(harness.__file__).parent
# Bottom to top; a module may import its own layer and those below it.
LAYERS = [
    "redaction",
    "outputs",
    "params",
    "statistics",
    "expansion",
    "model",
    "training",
    "study",
    "reporting",
    "api",
    "cli",
]


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name):
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imported_modules(node):
    """The harness modules an import statement names: `from harness.study import search` imports harness.study.search."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.startswith("harness")}
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
        return {f"{node.module}.{a.name}" if is_module(f"{node.module}.{a.name}") else node.module for a in node.names}
    return set()


def import_graph():
    """{module: the harness modules it imports, at module level or inside functions}."""
    return {
        module_name(path): set().union(*map(imported_modules, ast.walk(ast.parse(path.read_text()))))
        for path in PACKAGE.rglob("*.py")
    }


def layer(module):
    top = module.removeprefix("harness.").split(".")[0]
    return LAYERS.index("cli" if top.startswith("cli") else top) if module != "harness" else None


def test_no_module_imports_from_a_layer_above_it():
    graph = import_graph()
    upward = [
        (module, imported)
        for module, found in graph.items()
        if module != "harness"
        for imported in found
        if imported != "harness" and layer(imported) > layer(module)
    ]
    assert not upward


def test_no_import_circles():
    graph = {module: found - {"harness"} for module, found in import_graph().items() if module != "harness"}

    def reachable(start):
        seen, frontier = set(), [start]
        while frontier:
            for nxt in graph.get(frontier.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        return seen

    assert not [module for module in graph if module in reachable(module)]


def test_the_public_names_are_where_a_user_looks():
    from harness import TaylorExpansion, build_model, load_space, run_trial

    assert TaylorExpansion.__module__ == "harness.expansion.layer" and build_model.__module__ == "harness.model"
    assert load_space.__module__ == "harness.study.space" and run_trial.__module__ == "harness.training.trial"


def test_the_report_and_the_cli_load_no_tensorflow():
    """A report reads studies, and the CLI parses and checks its input, without the seconds TensorFlow takes."""
    import subprocess
    import sys

    probe = (
        "import sys, harness.reporting, harness.cli, harness.cli_parser, harness.study.space, harness.study.suite; "
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_each_module_says_its_job_and_stays_small():
    """A module opens with a docstring that says its one job; none is over 300 lines, no class over 120."""
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        tree = ast.parse(source)
        assert ast.get_docstring(tree), f"{path.name}: no docstring"
        assert len(source.splitlines()) <= 300, f"{path.name}: {len(source.splitlines())} lines"
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno - node.lineno < 120, f"{path.name}: class {node.name}"


def test_the_vocabulary_names_what_the_code_has():
    """`harness.params` lists the functions and backbones without importing sympy or Keras; the lists must agree
    with the series and the builders, so a newcomer who adds one to only one place is told."""
    from harness import params
    from harness.expansion import series
    from harness.model.backbones import BUILDERS

    assert tuple(series.FUNCTIONS) == params.FUNCTIONS
    assert tuple(BUILDERS) == params.BACKBONES == tuple(params.INSERTIONS_BY_BACKBONE)
