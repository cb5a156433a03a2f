"""Search spaces: a YAML file, validated on load, that samples trial params.

    dataset:    {name: digits, train_size: 800}
    training:   {epochs: 3, seed: 0}
    model:      {builder: "mypackage.nets:small_net"}   # optional: your own network (or {file: net.keras})
    configurations: [{insertion: dense, function: exp}]   # optional: what `harness benchmark` runs
    objectives: [accuracy]            # or [accuracy, flops | params | latency | train_seconds]
    params:
      insertion: [none, dense, all]   # a list: categorical
      order: {low: 1, high: 6}        # a range: int when both ends are ints
      learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
      width: 1.0                      # a scalar: fixed

Expansion parameters are sampled only when `insertion` is not "none", and
`expand_outputs` only in mode "expand".
"""

from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from harness.params import EXPANSION_KEYS, PARAM_KEYS, check_value, did_you_mean
from harness.study.specs import DatasetSpec, ModelSpec, Range, Strict, TrainingSpec, error_message

COST_OBJECTIVES = {
    "flops": "flops",
    "params": "total_params",
    "latency": "latency_seconds",
    "train_seconds": "train_seconds",
}


class SpaceError(ValueError):
    """A search space file that cannot be used; the message names file, key and problem."""


class Space(Strict):
    dataset: DatasetSpec = DatasetSpec()
    training: TrainingSpec = TrainingSpec()
    model: ModelSpec | None = None
    objectives: list[Literal["accuracy", "flops", "params", "latency", "train_seconds"]] = ["accuracy"]
    params: dict[str, list[Any] | Range | int | float | str | bool]
    configurations: list[dict[str, Any]] = []
    source: str = "<memory>"

    @pydantic.field_validator("objectives")
    @classmethod
    def _accuracy_first(cls, objectives):
        if not objectives or objectives[0] != "accuracy" or len(set(objectives)) != len(objectives):
            raise ValueError("must start with accuracy, then name each cost at most once, e.g. [accuracy, flops]")
        return objectives

    @pydantic.field_validator("params", mode="before")
    @classmethod
    def _known_params(cls, params):
        if not isinstance(params, dict):
            raise ValueError("must map parameter names to a list, a range or a fixed value")
        if not params:
            raise ValueError("is empty; it must name at least one parameter, such as insertion")
        for name, dimension in params.items():
            _check_dimension(name, dimension)
        return params

    @pydantic.model_validator(mode="after")
    def _model_is_the_backbone(self):
        if self.model is None:
            return self
        if self.model.builder is not None:
            backbone = self.model.builder
        else:
            beside_space = Path(self.source).parent if self.source != "<memory>" else Path()
            backbone = str((beside_space / Path(self.model.file).expanduser()).resolve())
        # The same backbone again is a checked space validated once more (as Ray's workers receive it).
        if self.params.setdefault("backbone", backbone) != backbone:
            raise ValueError("name the network once, in model or in params.backbone")
        return self

    @pydantic.model_validator(mode="after")
    def _values_make_sense(self):
        for name, dimension in self.params.items():
            values = dimension.values() if isinstance(dimension, Range) else dimension
            for value in values if isinstance(values, list) else [values]:
                check_value(name, value)
        for configuration in self.configurations:
            for name, value in configuration.items():
                if name not in PARAM_KEYS:
                    raise ValueError(
                        f"configurations: unknown parameter {name!r}{did_you_mean(name, PARAM_KEYS)}; expected one of "
                        f"{', '.join(PARAM_KEYS)}"
                    )
                check_value(name, value)
        return self

    @property
    def fixed_params(self):
        """The params the space fixes to one value."""
        return {name: value for name, value in self.params.items() if not isinstance(value, (list, Range))}

    def choices(self, name):
        """The values param `name` may take in this space (a fixed value's one, a list's, none for a range or
        a param the space leaves out), with its configurations' values."""
        dimension = self.params.get(name)
        values = [] if dimension is None or isinstance(dimension, Range) else dimension
        values = values if isinstance(values, list) else [values]
        return list(dict.fromkeys([*values, *(c[name] for c in self.configurations if name in c)]))

    @property
    def is_multi_objective(self):
        return len(self.objectives) > 1

    @property
    def directions(self):
        return ["maximize"] + ["minimize"] * (len(self.objectives) - 1)

    def sample(self, trial):
        """Suggest this trial's params from `trial`, skipping those that do not apply."""
        params = {}
        for name in sorted(self.params, key=PARAM_KEYS.index):
            if _applies(name, params):
                params[name] = self.suggest(trial, name)
        return params

    def complete(self, params):
        """`params` with the space's fixed values filled in where they apply (a sampled trial's full configuration)."""
        merged = {**self.fixed_params, **params}
        full = {}
        for name in sorted(merged, key=PARAM_KEYS.index):
            if _applies(name, full):
                full[name] = merged[name]
        return full

    def suggest(self, trial, name):
        """Suggest param `name` from `trial` as the space gives it: a choice, a range, or its one value."""
        dimension = self.params[name]
        if isinstance(dimension, list):
            return trial.suggest_categorical(name, dimension)
        if isinstance(dimension, Range):
            return dimension.suggest(trial, name)
        return dimension

    def grid(self):
        """The search space as lists of values, for Optuna's GridSampler."""
        grid = {}
        for name, dimension in self.params.items():
            if isinstance(dimension, list):
                grid[name] = dimension
            elif isinstance(dimension, Range):
                if not (dimension.is_int or dimension.step):
                    raise SpaceError(
                        f"{self.source}: params.{name}: the grid sampler needs choices or a range with a step"
                    )
                grid[name] = dimension.grid_values()
        return grid


def _check_dimension(name, dimension):
    """Raise ValueError, starting with `name`, if `name` is no param or `dimension` no list, range or value of it."""
    if name not in PARAM_KEYS:
        raise ValueError(
            f"{name}: unknown parameter{did_you_mean(name, PARAM_KEYS)}; expected one of {', '.join(PARAM_KEYS)}"
        )
    if isinstance(dimension, list) and not dimension:
        raise ValueError(f"{name}: the list of choices is empty")
    if isinstance(dimension, dict):
        try:
            Range.model_validate(dimension)
        except pydantic.ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(map(str, problem["loc"]))
            raise ValueError(
                f"{name}: {where + ': ' if where else ''}{problem['msg'].removeprefix('Value error, ')}"
            ) from None


def _applies(name, chosen):
    """Whether param `name` applies given the params `chosen` so far (in PARAM_KEYS order)."""
    if name in EXPANSION_KEYS and chosen.get("insertion", "none") == "none":
        return False
    return name != "expand_outputs" or chosen.get("mode") == "expand"


def find_space(path):
    """`path` as given, else relative to the repository that holds this package (where `search_spaces/` is)."""
    path = Path(path)
    if not path.exists() and not path.is_absolute():
        beside_package = Path(__file__).resolve().parents[2] / path
        if beside_package.exists():
            return beside_package
    return path


def load_space(path: str | Path, data_dir: str | Path | None = None) -> Space:
    """Read and validate a search space YAML file.

    Args:
        path: The YAML file (the schema reference lists its keys).
        data_dir: Where its dataset's files are read from instead of the space's own, if given.

    Returns:
        The `Space`: its dataset, training, objectives and params, checked.

    Raises:
        SpaceError: A ValueError with one clear line naming the file and the problem (an unknown key with the
            nearest valid one, a value out of range, YAML that does not parse).

    >>> space = load_space(find_space("search_spaces/quick.yaml"))
    >>> space.dataset.name, space.params["insertion"][:3], space.fixed_params
    ('digits', ['none', 'input', 'conv1'], {})
    """
    path = Path(path)
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise SpaceError(f"--data-dir {data_dir}: no such folder")
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpaceError(f"{path}: no such search space file") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpaceError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: a search space is a mapping with dataset, training, objectives and params")
    space = parse_space(raw, source=str(path))
    if data_dir is not None:
        space.dataset.data_dir = data_dir
    return space


def check_param_values(params):
    """Every param known and of an allowed value, and the series defined (before TensorFlow loads)."""
    from harness.expansion import series

    for name, value in params.items():
        if name not in PARAM_KEYS:
            raise ValueError(
                f"--param {name}: unknown parameter{did_you_mean(name, PARAM_KEYS)}; expected one of "
                f"{', '.join(PARAM_KEYS)}"
            )
        check_value(name, value)
    if params.get("insertion", "none") != "none":
        series.coefficients(params.get("function", "softplus"), params.get("order", 3), params.get("center", 0.0))


def portable_space(space):
    """`space` as JSON data that another process, on this machine or another, validates again into the same space:
    its data folder made absolute (workers start in folders of their own)."""
    data = space.model_dump(mode="json")
    if data["dataset"]["data_dir"]:
        data["dataset"]["data_dir"] = str(Path(data["dataset"]["data_dir"]).expanduser().resolve())
    return data


def parse_space(raw, source="<memory>"):
    try:
        space = Space.model_validate({**raw, "source": source})
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"][:2])
        message = error_message(first, Space)
        if key in ("", "params") and ": " in message:
            # Our params checks start with the parameter's name: fold it into the key.
            name, message = message.split(": ", 1)
            key = f"params.{name}"
        raise SpaceError(f"{source}: {key or 'top level'}: {message}") from None
    return space
