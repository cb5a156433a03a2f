"""A stage's trials as Ray Tune trials, on a Ray cluster or a local one; the Optuna study stays the one record.

Ray Tune's `OptunaSearch`, over the stage's own study, asks and tells in this
process (the driver) alone, so the study's database sees one client however
many trials run. Each trial trains in a Ray worker with the resources asked for
(Ray sets `CUDA_VISIBLE_DEVICES` to the trial's own GPUs), through the same
`TrialLifecycle` as every engine, under the stage's MLflow parent run. Each
epoch's validation accuracy comes back to the driver, where the study's pruner
judges it and Ray stops a pruned trial. A trial whose worker dies is retried up
to `max_failures` times, then recorded FAIL with Ray's reason. A killed driver
leaves its trials RUNNING under its pid: the next command fails them and runs
the rest, so no trial is lost and none counted twice.

Ray is an optional extra: `harness.study.ray_check.check_ray` says so in one line before this module loads.
"""

import dataclasses
import functools
import json
import logging
import os

import keras
import optuna
import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch
from rich.console import Console

from harness.study.lifecycle import failure_reason
from harness.study.objective import claim, objective_values
from harness.study.progress import run_label
from harness.study.records import OUTCOME
from harness.study.space import portable_space
from harness.study.storage import default_home

# Tune draws no table of its own (the stage draws each trial), writes no result files beside the study and runs,
# and leaves the results' metrics to the study (an epoch of a multi-objective trial carries only its accuracy).
QUIET_TUNE = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
}
REMEMBERED = "remembered/"  # what a trial remembered in its worker, sent back with each result under this prefix
EPOCH = "epoch"  # an epoch's result carries its number (from 0); the trial's last result has none


@dataclasses.dataclass
class RayPool:
    """Where and how a stage's trials run on Ray: the cluster's `address` (None: a local cluster on this machine),
    each trial's CPUs and GPUs (fractions allowed), how many run at once (None: as many as fit) and how often a lost
    one is retried."""

    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 2

    def run(self, stage):
        """Run `stage` (a `Search`) until its study holds its trials, Ray Tune scheduling them."""
        for name, value in QUIET_TUNE.items():
            os.environ.setdefault(name, value)
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)  # a trial's error is in its record and its run
        # Tune starts one trial at a time behind a searcher: with a worker's start (TensorFlow's import) longer than
        # a quick trial, one worker would take every trial. As many start at once as the cluster holds.
        os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(self.trials_that_fit())
        stage.run(optimize=functools.partial(self._tune, stage))

    def trials_that_fit(self):
        """How many trials the cluster's CPUs and GPUs hold at once (at least 1)."""
        resources = ray.cluster_resources()
        fits = [resources.get("CPU", 1) / self.cpus_per_trial] if self.cpus_per_trial else []
        fits += [resources.get("GPU", 0) / self.gpus_per_trial] if self.gpus_per_trial else []
        return max(1, int(min(fits, default=1)))

    def job(self, stage):
        """What each Ray worker needs to train the stage's trials: the checked space, and the stage's settings under
        its parent run (as JSON: it travels to the workers whole, and names a worker's cached lifecycle)."""
        settings = dataclasses.replace(stage.settings, parent_run_id=stage.parent_run_id)
        return json.dumps(
            {
                "space": portable_space(stage.space),
                "threads": max(1, int(self.cpus_per_trial)),
                "settings": dataclasses.asdict(settings),
            }
        )

    def _tune(self, stage, remaining, shown):
        searcher = StudySearch(stage, shown)
        trainable = tune.with_resources(
            tune.with_parameters(train_trial, job=self.job(stage)),
            {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=StudyPruning(searcher),
                num_samples=remaining,
                max_concurrent_trials=self.max_concurrent,
                time_budget_s=stage.settings.timeout,
                reuse_actors=True,  # a worker keeps TensorFlow and the data loaded from one trial to the next
            ),
            run_config=tune.RunConfig(
                name=stage.settings.optuna_study,
                storage_path=str(default_home() / "ray"),
                failure_config=tune.FailureConfig(max_failures=self.max_failures),
                callbacks=[searcher.retried],
                verbose=0,
            ),
        )
        tuner.fit()


class DriverOnly:
    """A part of the driver that Tune pickles with its experiment for its own restore, which is not used (the
    study is the record a later command resumes from): it pickles empty, as it holds the stage's locks and
    connections."""

    def __getstate__(self):
        return {}


class RetriedRuns(DriverOnly, tune.Callback):
    """The MLflow run of a trial's attempt that Ray lost and runs again, closed with that reason."""

    def __init__(self, tracker):
        self.tracker = tracker

    def on_trial_recover(self, iteration, trials, trial, **info):
        run_id = (trial.last_result or {}).get(REMEMBERED + "mlflow_run_id")
        if run_id:
            self.tracker.end_trial(run_id, "FAIL", "its Ray worker was lost; Ray runs the trial again", status="FAILED")


class StudySearch(DriverOnly, OptunaSearch):
    """Ray Tune's OptunaSearch over `stage`'s own study (its sampler, pruner and storage): each trial asked for and
    its params prepared as a plain search prepares them, and told with what it remembered in its worker."""

    def __init__(self, stage, shown):
        self.stage, self.shown, self.over = stage, shown, False
        self.retried, self.errors = RetriedRuns(stage.tracker), {}  # Ray's errors, by Ray trial id
        self.metrics = ["val_accuracy", *stage.space.objectives[1:]]
        modes = ["max" if d == "maximize" else "min" for d in stage.space.directions]
        single = len(self.metrics) == 1
        super().__init__(
            space=self._define,
            metric=self.metrics[0] if single else self.metrics,
            mode=modes[0] if single else modes,
            study_name=stage.settings.optuna_study,
            storage=stage.storage,
        )

    def save_to_dir(self, checkpoint_dir, session_str="default"):
        pass  # see `DriverOnly`

    def _setup_study(self, mode):
        self._ot_study = self.stage.study  # the stage's own, with its sampler and pruner

    def _define(self, trial):
        """A trial's config: its params, taken from the queue or sampled, and what its worker needs to know."""
        objective = self.stage.objective
        params = objective.prepare(trial)
        claim(trial)  # the driver holds it: if the driver dies, the next command fails it
        return {
            "number": trial.number,
            "params": params,
            "prunable": objective.prunable(trial) and not self.stage.space.is_multi_objective,
            "label": run_label(trial, self.stage.study, self.stage.settings.stage),
        }

    def on_trial_result(self, trial_id, result):
        pass  # `StudyPruning` reports each epoch to the study before it judges it

    def report(self, trial_id, result):
        """Report an epoch's validation accuracy to the study; whether its pruner stops the trial."""
        trial = self._ot_trials.get(trial_id)  # none once told: a result Tune delivers after the trial ended
        if trial is None or EPOCH not in result or self.stage.space.is_multi_objective:
            return False
        trial.report(float(result["val_accuracy"]), step=int(result[EPOCH]))
        return bool(result.get("prunable")) and trial.should_prune()

    def on_trial_complete(self, trial_id, result=None, error=False):
        trial, result = self._ot_trials.pop(trial_id, None), result or {}
        if trial is None:
            return  # told already
        remembered = {k.removeprefix(REMEMBERED): v for k, v in result.items() if k.startswith(REMEMBERED)}
        if OUTCOME not in remembered:  # stopped by Ray: pruned here, or its worker lost for good
            remembered.update(self._stopped(result, remembered.get("mlflow_run_id"), trial_id, error))
        for key, value in remembered.items():
            trial.set_user_attr(key, value)
        state = remembered[OUTCOME]
        if state == "COMPLETE":
            self._ot_study.tell(trial, [result[m] for m in self.metrics])
        else:
            self._ot_study.tell(trial, state=optuna.trial.TrialState[state])
        self.over = self.stage.after_trial(self._ot_study._storage.get_trial(trial._trial_id), self.shown)

    def suggest(self, trial_id):
        return Searcher.FINISHED if self.over else super().suggest(trial_id)

    def _stopped(self, result, run_id, trial_id, error):
        """The outcome and reason of a trial Ray stopped, its MLflow run closed with them."""
        if error:
            state, reason = "FAIL", self.errors.get(trial_id, "its Ray worker failed")
        else:
            epochs = self.stage.space.training.epochs
            state = "PRUNED"
            reason = f"pruned after epoch {result.get(EPOCH, -1) + 1} of {epochs}: validation accuracy below the pruner's threshold"
        if run_id:
            self.stage.tracker.end_trial(run_id, state, reason)
        return {OUTCOME: state, "failure_reason": reason}


class StudyPruning(DriverOnly, FIFOScheduler):
    """The study's pruner, through Ray: each epoch reported to the study, the trial stopped if the pruner says so."""

    def __init__(self, searcher):
        super().__init__()
        self.searcher = searcher

    def on_trial_result(self, tune_controller, trial, result):
        return TrialScheduler.STOP if self.searcher.report(trial.trial_id, result) else TrialScheduler.CONTINUE

    def on_trial_error(self, tune_controller, trial):
        """Keep why Ray gave up on `trial` (its last attempt's error) for the study's record, which Ray's
        searcher is told of next."""
        lines = str(trial.get_error() or "").strip().splitlines()
        self.searcher.errors[trial.trial_id] = (
            f"its Ray worker failed: {lines[-1]}" if lines else "its Ray worker failed"
        )


@functools.cache
def _worker(job):
    """This Ray worker's space and lifecycle, made once: a reused worker keeps its data loaded."""
    from harness.study.lifecycle import open_lifecycle
    from harness.study.settings import SearchSettings
    from harness.study.space import Space
    from harness.training.device import configure

    job = json.loads(job)
    settings = SearchSettings(**job["settings"])
    configure(job["threads"], settings.mixed_precision)
    space = Space.model_validate(job["space"])
    return space, open_lifecycle(space, settings, Console(file=open(os.devnull, "w")))


class ReportEpoch(keras.callbacks.Callback):
    """Report each epoch's validation accuracy to Ray, with what the trial has remembered so far."""

    def __init__(self, config, remembered):
        super().__init__()
        self.config, self.remembered = config, remembered

    def on_epoch_end(self, epoch, logs=None):
        accuracy = float((logs or {}).get("val_accuracy", float("nan")))
        tune.report(
            {EPOCH: epoch, "val_accuracy": accuracy, "prunable": self.config["prunable"], **_sent(self.remembered)}
        )


def _sent(remembered):
    return {REMEMBERED + key: value for key, value in remembered.items() if value is not None}


def train_trial(config, job):
    """Ray Tune's trainable: train the trial `config` names in this worker, then report what it remembered and, if
    it completed, its objective values."""
    space, lifecycle = _worker(job)
    names = ["val_accuracy", *space.objectives[1:]]
    remembered = {}
    values = dict.fromkeys(names, float("nan"))  # Tune asks each result for the metrics; told only if COMPLETE
    try:
        result = lifecycle.run(
            config["number"],
            config["params"],
            space.training.epochs,
            [ReportEpoch(config, remembered)],
            remembered.__setitem__,
            config["label"],
        )
        values = dict(zip(names, objective_values(result, space)))
    except optuna.TrialPruned:
        pass  # the lifecycle closed the run as PRUNED and remembered why
    except Exception as error:  # closed by the lifecycle too, unless the run could not even start
        remembered.setdefault(OUTCOME, "FAIL")
        remembered.setdefault("failure_reason", failure_reason(error))
    tune.report({**values, **_sent(remembered)})
