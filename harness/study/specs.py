"""The parts of a search space file other than its params: the dataset, the model, the training, and a range of
values; pydantic models, each checked as the file loads."""

import pydantic

from harness.params import did_you_mean


class Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


def error_message(problem, model):
    """One pydantic `problem` (an entry of `ValidationError.errors()`) of a file read into `model`, in words; a key
    the file may not hold names the keys it may, and the nearest one."""
    if problem["type"] != "extra_forbidden":
        return problem["msg"].removeprefix("Value error, ")
    for part in problem["loc"][:-1]:  # down to the mapping that holds the unknown key
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)):
            return problem["msg"]
        model = annotation
    keys = [name for name in model.model_fields if name != "source"]
    return f"unknown key{did_you_mean(problem['loc'][-1], keys)}; expected one of {', '.join(keys)}"


class DatasetSpec(Strict):
    name: str = "digits"
    data_dir: str | None = None
    train_size: pydantic.PositiveInt | None = None
    val_size: pydantic.PositiveInt | None = None
    test_size: pydantic.PositiveInt | None = None


class ModelSpec(Strict):
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


class TrainingSpec(Strict):
    epochs: pydantic.PositiveInt = 3
    seed: int = 0


class Range(Strict):
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

    def grid_values(self):
        """Every value from low to high in steps of `step` (1 for ints), for the grid sampler."""
        count = int(round((self.high - self.low) / (self.step or 1))) + 1
        values = [self.low + i * (self.step or 1) for i in range(count)]
        return [int(v) for v in values] if self.is_int else values

    def values(self):
        return [self.low, self.high]
