"""A suite: the same configurations benchmarked on several datasets and backbones, one study a cell.

    name: suite-example                 # optional: the file's name
    training: {epochs: 2, seed: 0}
    seeds: 3                            # or auto, with max_seeds and rope
    params: {width: 0.5}                # what every cell fixes (the training recipe, say)
    configurations:                     # each is compared with its matched baseline in every cell
      - {insertion: all, function: gelu, order: 4, conditioning: tanh}
    datasets:
      - {name: digits}
      - {name: mnist, train_size: 1000}
    backbones: [seed_cnn, resnet20]

Each dataset x backbone cell is a benchmark study (`<name>-<dataset>-<backbone>`) run by `run_benchmark`, so a
suite resumes where it stopped and runs on any Optuna storage; `harness.reporting.suite` reads the cells back.
"""

import dataclasses
import re
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from harness.params import backbone_label
from harness.statistics import AutoSeeds
from harness.study.space import SpaceError, parse_space
from harness.study.specs import DatasetSpec, TrainingSpec, error_message


class SuiteSpec(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    name: str | None = None
    training: TrainingSpec = TrainingSpec()
    seeds: pydantic.PositiveInt | Literal["auto"] = 3
    max_seeds: pydantic.PositiveInt = 20
    rope: pydantic.PositiveFloat = 1.0
    params: dict[str, Any] = {}
    configurations: list[dict[str, Any]] = pydantic.Field(min_length=1)
    datasets: list[DatasetSpec] = pydantic.Field(min_length=1)
    backbones: list[str] = pydantic.Field(min_length=1)


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    cells: dict  # study name -> (dataset label, backbone, Space)
    seeds: Any  # a count or AutoSeeds

    @property
    def studies(self):
        return list(self.cells)


def dataset_label(dataset):
    """A dataset's name in a column or a study name: 'imagefolder:../x/cifar10-jpeg-subset' -> 'cifar10-jpeg-subset'."""
    return Path(dataset.name.removeprefix("imagefolder:")).name or dataset.name


def load_suite(path, data_dir=None):
    """Read and check a suite file, each cell's space too; raise SpaceError with one clear line."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpaceError(f"{path}: no such suite file") from None
    except yaml.YAMLError as error:
        raise SpaceError(f"{path}: not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: a suite is a mapping with configurations, datasets and backbones")
    try:
        spec = SuiteSpec.model_validate(raw)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "top level"
        raise SpaceError(f"{path}: {key}: {error_message(first, SuiteSpec)}") from None
    name = spec.name or path.stem
    cells = {}
    for dataset in spec.datasets:
        if data_dir is not None:
            dataset = dataset.model_copy(update={"data_dir": data_dir})
        for backbone in spec.backbones:
            space = parse_space(
                {
                    "dataset": dataset.model_dump(),
                    "training": spec.training.model_dump(),
                    "params": {**spec.params, "backbone": backbone},
                    "configurations": spec.configurations,
                },
                source=str(path),
            )
            study = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{name}-{dataset_label(dataset)}-{backbone_label(backbone)}")
            if study in cells:
                raise SpaceError(f"{path}: two cells would share the study {study!r}; give the datasets distinct names")
            cells[study] = (dataset_label(dataset), backbone_label(backbone), space)
    seeds = AutoSeeds(spec.max_seeds, spec.rope) if spec.seeds == "auto" else spec.seeds
    return Suite(name, cells, seeds)


def run_suite(suite, settings, *, console=None, say=print, pool=None):
    """Run (or resume) every cell of `suite` as a benchmark study under `settings` (stores, precision), in `pool`
    (a `RayPool`) if given."""
    from harness.study.confirm import run_benchmark

    for number, (study, (dataset, backbone, space)) in enumerate(suite.cells.items(), start=1):
        say(f"suite {suite.name}: cell {number} of {len(suite.cells)}, {dataset} x {backbone} (study {study})")
        run_benchmark(space, dataclasses.replace(settings, study_name=study), suite.seeds, console=console, pool=pool)
