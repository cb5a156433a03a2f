"""MkDocs hook: the reference pages' generated parts, written from the code at build time so they cannot drift.

A page asks for one with an HTML comment on a line of its own, `<!-- generated: NAME -->`, where NAME is one of
`GENERATORS`: `cli` (every `harness` command, from the argparse parser of `harness.cli_parser`), `space-schema` (the
search-space file's keys, from the pydantic model's `model_json_schema()`) and `params` (every param a space or
`--param` may set, from the vocabulary in `harness.params`). None of them imports TensorFlow or Keras.
"""

import argparse
import ast
import collections
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)


def on_page_markdown(markdown, page, config, files):
    """Replace each `<!-- generated: NAME -->` line of a page by what `GENERATORS[NAME]` writes."""
    return MARKER.sub(lambda match: GENERATORS[match.group(1)](), markdown)


def cell(text):
    """`text` safe inside a Markdown table cell: no pipes, no HTML tags, one line."""
    text = " ".join(str(text).split())
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --- the command line -------------------------------------------------------------------------------------------


def _parser():
    from harness.cli_parser import build_parser

    return build_parser(collections.defaultdict(lambda: None))  # the commands' functions are not needed to read it


def _subcommands(parser):
    """(name, help, parser) of each documented command, in the order `harness --help` lists them."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in action._choices_actions}
    return [(name, helps[name], sub) for name, sub in action.choices.items() if name in helps]


def _flags(action):
    """`--seeds N|auto`, `--engine {optuna,keras-tuner}`, `--vary-split`, `FILE.yaml`: as the usage line has it."""
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    flag = " / ".join(action.option_strings)
    if action.nargs == 0:
        return f"`{flag}`"
    if action.choices:
        return f"`{flag} {{{','.join(map(str, action.choices))}}}`"
    return f"`{flag} {action.metavar or action.dest.upper()}`"


def _default(action):
    if action.required:
        return "required"
    if action.nargs == 0 or action.default in (None, [], argparse.SUPPRESS):
        return ""
    return f"`{action.default}`"


def value(default):
    """A default as a YAML file writes it: `true`, `[accuracy]`, `0.001`; None (not set) as a dash."""
    if default is None:
        return "-"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, list):
        return f"`[{', '.join(map(str, default))}]`"
    return f"`{default}`"


def cli_reference():
    """Each command: what it does, its usage line and a table of its arguments, as `harness CMD --help` has them."""
    os.environ["COLUMNS"] = "100"  # argparse wraps usage lines to the terminal's width
    parser = _parser()
    out = ["```text", parser.format_help().rstrip(), "```"]
    for name, help_text, sub in _subcommands(parser):
        out += [f"## `harness {name}`", "", help_text[0].upper() + help_text[1:] + ".", ""]
        out += ["```text", sub.format_usage().rstrip(), "```", ""]
        formatter = sub._get_formatter()
        rows = [
            [_flags(a), _default(a), cell(formatter._expand_help(a) if a.help else "")]
            for a in sub._actions
            if not isinstance(a, argparse._HelpAction)
        ]
        out += [table(["argument", "default", "meaning"], rows), ""]
    return "\n".join(out)


# --- the search-space file --------------------------------------------------------------------------------------

# What each key of a space file means. The schema gives names, types and defaults; a key without a line here fails
# the build, so a new key gets its description.
SPACE_KEYS = {
    "dataset": "the data every trial trains on",
    "dataset.name": "`digits`, `mnist`, `fashion_mnist`, `cifar10` or `imagefolder:PATH` (see the datasets guide)",
    "dataset.data_dir": "folder holding downloaded datasets (`--data-dir` overrides it; then `$HARNESS_DATA_DIR`, "
    "then Keras's cache)",
    "dataset.train_size": "training images drawn, a seeded subset (default: all that the validation split leaves)",
    "dataset.val_size": "validation images, held out of the training set first (default: a tenth of train_size, or "
    "of the whole training set)",
    "dataset.test_size": "test images, a seeded subset of the test set (default: all)",
    "training": "what every trial shares",
    "training.epochs": "epochs per trial",
    "training.seed": "the seed of the search's trials (confirmation draws fresh ones)",
    "model": "your own network instead of a built-in backbone: give `builder` or `file`, not both; it becomes the "
    "space's fixed `backbone`",
    "model.builder": '`"package.module:function"` taking (input shape, class count) and returning a `keras.Model` '
    "(it also gets `width=` if it takes one)",
    "model.file": "a saved `.keras` model, relative to the space file; its architecture is used with fresh weights "
    "from each seed",
    "objectives": "`accuracy` first, then any of `flops`, `params`, `latency`, `train_seconds`, each at most once "
    "(several objectives: a multi-objective study, never pruned)",
    "params": "every param the search samples or fixes (the table below): a list is a categorical choice, a "
    "mapping a range, a scalar a fixed value",
    "params.NAME.low": "a range's lowest value",
    "params.NAME.high": "a range's highest value; int when both ends are ints",
    "params.NAME.step": "a range's step (the grid sampler needs one on a float range)",
    "params.NAME.log": "sample on a log scale (low > 0)",
    "configurations": "fixed configurations, each a mapping of params: what `harness benchmark` trains",
}


def _type(schema, defs):
    if "$ref" in schema:
        return "mapping"
    if "anyOf" in schema:
        return " or ".join(dict.fromkeys(_type(option, defs) for option in schema["anyOf"]))
    kind = schema.get("type", "any")
    if kind == "array":
        items = schema.get("items", {})
        return f"list of {_type(items, defs)}" if items else "list"
    if kind == "object":
        return "mapping"
    if "enum" in schema:
        return ", ".join(f"`{value}`" for value in schema["enum"])
    return {"integer": "int", "number": "float", "string": "str", "boolean": "bool", "null": "null"}.get(kind, kind)


def _rows(properties, required, defs, prefix, rows):
    for name, schema in properties.items():
        key = f"{prefix}{name}"
        if key == "source":  # where the space was read from, set by `load_space`, not a key of the file
            continue
        if key not in SPACE_KEYS:
            raise KeyError(f"docs/hooks.py: the space key {key!r} has no description in SPACE_KEYS")
        default = schema.get("default")
        default = "required" if name in required else "" if isinstance(default, dict) else value(default)
        rows.append([f"`{key}`", cell(_type(schema, defs)), default, cell(SPACE_KEYS[key])])
        target = schema
        if "anyOf" in schema:
            target = next((option for option in schema["anyOf"] if "$ref" in option), schema)
        if "$ref" in target:
            nested = defs[target["$ref"].rsplit("/", 1)[-1]]
            _rows(nested.get("properties", {}), nested.get("required", []), defs, f"{key}.", rows)
        elif key == "params":
            ranges = defs["Range"]
            _rows(ranges["properties"], ranges["required"], defs, "params.NAME.", rows)


def space_schema():
    """The space file's keys as a table, from `harness.study.space.Space.model_json_schema()`."""
    from harness.study.space import Space

    schema = Space.model_json_schema()
    rows = []
    _rows(schema["properties"], schema.get("required", []), schema.get("$defs", {}), "", rows)
    return table(["key", "type", "default", "meaning"], rows)


# --- the params -------------------------------------------------------------------------------------------------

PARAMS = {
    "backbone": "the network: a built-in one, a builder `package.module:function`, or a saved `path/net.keras`",
    "insertion": "where the expansion goes: `none` (the baseline), `input`, `all`, `first`, `last`, a backbone's "
    "own points, or `after:GLOB` (after each layer whose name matches)",
    "width": "scales every layer's filters and units",
    "function": "the function whose series is used",
    "order": "the highest power p, an integer from 0 to 20",
    "center": "the point x0 the series is taken around (0: Maclaurin)",
    "mode": "`series`: y = s_p(x); `weighted`: a trainable sum of the partial sums; `expand`: the last axis grows "
    "by p+1 (not where activations are replaced)",
    "coefficients": "`fixed` keeps the series' c_k; `trainable` starts there and learns them",
    "per_unit": "one set of coefficients and term weights per unit or channel, or one shared set",
    "conditioning": "`clip` or `tanh` keeps |x - x0| within `limit`; `batchnorm` normalises first",
    "expand_outputs": "in `expand` mode, one output per term or per partial sum",
    "limit": "the bound for `clip`, `tanh` and the basis (unset: 0.9 x the radius of convergence, 3 for entire "
    "functions)",
    "basis": "the weights' basis on t = (x - x0) / limit; each starts as the series exactly",
    "coefficient_gradient": "`mean` divides a weight's gradient by the values of one example that share it; `sum` "
    "is the plain gradient",
    "coefficient_lr_scale": "the coefficients' learning rate as a multiple of the recipe's",
    "coefficient_decay": "whether weight decay applies to the coefficients and term weights",
    "learning_rate": "the peak learning rate",
    "batch_size": "examples per step",
    "optimizer": "Keras's optimizers; `sgd` has Nesterov momentum 0.9",
    "weight_decay": "Keras's decoupled weight decay, on every optimizer",
    "schedule": "`cosine`: CosineDecay to 0 over the trial's steps",
    "warmup_epochs": "a linear warm-up from 0, in whole epochs",
    "label_smoothing": "CategoricalCrossentropy's label smoothing, from 0 to below 1",
    "augment": "`crop_flip`: a horizontal flip and a translation of up to 4 pixels, in training only",
    "clip_norm": "the gradients' global norm clipped to this (0: off), for the baseline and the expansion alike",
    "seed": "initialisation, data order, dropout and augmentation",
}


def _layer_defaults():
    """`TaylorExpansion.__init__`'s defaults, read from its source (importing it would load Keras)."""
    tree = ast.parse((ROOT / "harness" / "expansion" / "layer.py").read_text())
    layer = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "TaylorExpansion")
    init = next(n for n in layer.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    arguments = init.args.args[-len(init.args.defaults) :]
    return {a.arg: ast.literal_eval(d) for a, d in zip(arguments, init.args.defaults)}


def params_table():
    """Every param key, its group, the values it takes and its default, from `harness.params`."""
    from harness import params as vocabulary

    defaults = {
        "backbone": vocabulary.BASELINE_DEFAULTS["backbone"],
        "insertion": "none",
        "width": vocabulary.BASELINE_DEFAULTS["width"],
        **{key: value for key, value in _layer_defaults().items() if key in vocabulary.LAYER_KEYS},
        **vocabulary.COEFFICIENT_GROUP_DEFAULTS,
        **vocabulary.TRAINING_DEFAULTS,
    }
    values = {
        **vocabulary.ALLOWED_VALUES,
        "backbone": vocabulary.BACKBONES,
        "insertion": vocabulary.INSERTION_POINTS + ("after:GLOB",),
    }
    rows = []
    for key in vocabulary.PARAM_KEYS:
        if key not in PARAMS:
            raise KeyError(f"docs/hooks.py: the param {key!r} has no description in PARAMS")
        if key in vocabulary.TRAINING_DEFAULTS:
            group = "training"
        elif key in vocabulary.EXPANSION_KEYS:
            group = "expansion"
        else:
            group = "model"
        allowed = ", ".join(value(v) for v in values[key]) if key in values else "a number"
        rows.append([f"`{key}`", group, allowed, value(defaults.get(key)), cell(PARAMS[key])])
    return table(["param", "group", "values", "default", "meaning"], rows)


GENERATORS = {"cli": cli_reference, "space-schema": space_schema, "params": params_table}
