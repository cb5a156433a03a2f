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

from harness.params import BASELINE_DEFAULTS, EXPANSION_KEYS, PARAM_KEYS, check_value

COST_OBJECTIVES = {"flops": "flops", "params": "total_params", "latency": "latency_seconds", "train_seconds": "train_seconds"}


class SpaceError(ValueError):
    """A search space file that cannot be used; the message names file, key and problem."""


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    name: str = "digits"
    data_dir: str | None = None
    train_size: pydantic.PositiveInt | None = None
    val_size: pydantic.PositiveInt | None = None
    test_size: pydantic.PositiveInt | None = None


class ModelSpec(_Strict):
    """A researcher's own network: a builder "package.module:function", or a saved model file (relative to the
    space file). It becomes the space's fixed `backbone`."""

    builder: str | None = None
    file: str | None = None

    @pydantic.model_validator(mode="after")
    def _one_source(self):
        if (self.builder is None) == (self.file is None):
            raise ValueError("give either builder: package.module:function or file: path/net.keras")
        if self.file is not None and not self.file.endswith(".keras"):
            raise ValueError(f"file: {self.file}: a saved Keras model ends in .keras")
        return self


class TrainingSpec(_Strict):
    epochs: pydantic.PositiveInt = 3
    seed: int = 0


class Range(_Strict):
    low: int | float
    high: int | float
    step: int | float | None = None
    log: bool = False

    @pydantic.model_validator(mode="after")
    def _ordered(self):
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) is greater than high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    @property
    def is_int(self):
        return all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))

    def suggest(self, trial, name):
        if self.is_int:
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def values(self):
        return [self.low, self.high]


class Space(_Strict):
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
            if name not in PARAM_KEYS:
                raise ValueError(f"{name}: unknown parameter; expected one of {', '.join(PARAM_KEYS)}")
            if isinstance(dimension, list) and not dimension:
                raise ValueError(f"{name}: the list of choices is empty")
            if isinstance(dimension, dict):
                try:
                    Range.model_validate(dimension)
                except pydantic.ValidationError as error:
                    problem = error.errors()[0]
                    where = ".".join(map(str, problem["loc"]))
                    raise ValueError(f"{name}: {where + ': ' if where else ''}{problem['msg'].removeprefix('Value error, ')}") from None
        return params

    @pydantic.model_validator(mode="after")
    def _model_is_the_backbone(self):
        if self.model is None:
            return self
        if "backbone" in self.params:
            raise ValueError("name the network once: model, or params.backbone")
        if self.model.builder is not None:
            self.params["backbone"] = self.model.builder
        else:
            beside_space = Path(self.source).parent if self.source != "<memory>" else Path()
            self.params["backbone"] = str((beside_space / Path(self.model.file).expanduser()).resolve())
        return self

    @pydantic.model_validator(mode="after")
    def _values_make_sense(self):
        for name, dimension in self.params.items():
            values = dimension if isinstance(dimension, list) else dimension.values() if isinstance(dimension, Range) else [dimension]
            for value in values:
                check_value(name, value)
        for configuration in self.configurations:
            for name, value in configuration.items():
                if name not in PARAM_KEYS:
                    raise ValueError(f"configurations: unknown parameter {name!r}; expected one of {', '.join(PARAM_KEYS)}")
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
        values = dimension if isinstance(dimension, list) else [] if dimension is None or isinstance(dimension, Range) else [dimension]
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
                params[name] = self._suggest(trial, name)
        return params

    def complete(self, params):
        """`params` with the space's fixed values filled in where they apply (a sampled trial's full configuration)."""
        merged = {**self.fixed_params, **params}
        full = {}
        for name in sorted(merged, key=PARAM_KEYS.index):
            if _applies(name, full):
                full[name] = merged[name]
        return full

    def baseline_params(self):
        """The plain network under this space's training: fixed values as given, searched ones at their defaults.

        A searched backbone, width or training param takes its default where
        the space allows it, else the nearest value it does allow.
        """
        params = {"insertion": "none"}
        for name, default in BASELINE_DEFAULTS.items():
            if name not in self.params:
                continue  # the trial takes its default, as every trial of this space does
            dimension = self.params[name]
            if isinstance(dimension, list):
                params[name] = default if default in dimension else dimension[0]
            elif isinstance(dimension, Range):
                params[name] = type(dimension.low)(min(max(default, dimension.low), dimension.high))
            else:
                params[name] = dimension
        return params

    @property
    def searched_baseline_keys(self):
        """The hyperparameters a baseline shares with an expanded network (backbone, width, the recipe) that this
        space searches: more than one value to choose from."""
        return [name for name in BASELINE_DEFAULTS if isinstance(self.params.get(name), (list, Range))
                and not (isinstance(self.params[name], list) and len(set(map(repr, self.params[name]))) == 1)]

    def sample_baseline(self, trial):
        """Suggest a baseline's params from `trial`: no expansion, and only the hyperparameters it shares searched."""
        return {"insertion": "none", **{name: self._suggest(trial, name) for name in self.searched_baseline_keys}}

    def _suggest(self, trial, name):
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
                    raise SpaceError(f"{self.source}: params.{name}: the grid sampler needs choices or a range with a step")
                count = int(round((dimension.high - dimension.low) / (dimension.step or 1))) + 1
                values = [dimension.low + i * (dimension.step or 1) for i in range(count)]
                grid[name] = [int(v) for v in values] if dimension.is_int else values
        return grid


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


def load_space(path, data_dir=None):
    """Read and validate a search space YAML file; raise SpaceError with one clear line.

    `data_dir`, if given, is where its dataset's files are read from instead of the space's own.
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
            raise ValueError(f"--param {name}: unknown parameter; expected one of {', '.join(PARAM_KEYS)}")
        check_value(name, value)
    if params.get("insertion", "none") != "none":
        series.coefficients(params.get("function", "softplus"), params.get("order", 3), params.get("center", 0.0))


def parse_space(raw, source="<memory>"):
    try:
        space = Space.model_validate({**raw, "source": source})
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"][:2])
        message = first["msg"].removeprefix("Value error, ")
        if key in ("", "params") and ": " in message:
            # Our params checks start with the parameter's name: fold it into the key.
            name, message = message.split(": ", 1)
            key = f"params.{name}"
        raise SpaceError(f"{source}: {key or 'top level'}: {message}") from None
    return space
