"""A stage's settings, and the Optuna sampler and pruner they name: plain data, so they travel to worker processes
whole (`workers.WorkerPool` sends them as JSON)."""

import dataclasses
import importlib.util

import optuna

from harness.params import check_choice
from harness.study.records import CONFIRM_SUFFIX, STAGES
from harness.study.storage import resolve_stores

SAMPLERS = ("tpe", "random", "grid", "nsga2", "gp")
SAVE_MODELS = ("best", "all", "none")  # which search trials save model.keras; seeded runs always do
PRUNERS = ("median", "hyperband", "none")


@dataclasses.dataclass
class SearchSettings:
    study_name: str
    n_trials: int = 12
    timeout: float | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int | None = None
    heartbeat_interval: int = 30
    workers: int = 1
    parent_run_id: str | None = None
    mixed_precision: bool = False
    epoch_budget: int | None = None  # stop starting trials once finished ones have trained this many epochs
    stage: str = "search"
    save_models: str = "best"
    # Every Nth sampled trial tunes the baseline's shared hyperparameters, so the tuned baseline has its own search.
    baseline_every: int = 4
    vary_split: bool = False  # each seed also redraws the train/validation split
    log_norms: bool = False  # each trial's MLflow run gets its variables' gradient and value norms per epoch

    def __post_init__(self):
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("pruner", self.pruner, PRUNERS)
        if self.n_trials < 1:
            raise ValueError(f"trials must be at least 1, got {self.n_trials}")
        if self.baseline_every < 0:
            raise ValueError(f"baseline_every must be at least 0 (0: no baseline turns), got {self.baseline_every}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        check_choice("save_models", self.save_models, SAVE_MODELS)
        check_choice("stage", self.stage, STAGES)
        # Optuna imports PyTorch only when the sampler first samples: without this check every trial would fail.
        if self.sampler == "gp" and importlib.util.find_spec("torch") is None:
            raise ValueError(
                "--sampler gp needs PyTorch, which is not installed: pip install torch, or pick another sampler"
            )
        self.storage, self.tracking_uri = resolve_stores(self.storage, self.tracking_uri)

    @property
    def optuna_study(self):
        """The Optuna study of this stage; its MLflow experiment is always `study_name`."""
        return self.study_name + CONFIRM_SUFFIX if self.stage == "confirm" else self.study_name


def make_sampler(name, space, seed):
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.GPSampler(seed=seed)


def make_pruner(name, space):
    if name == "none" or space.is_multi_objective:
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=space.training.epochs)
