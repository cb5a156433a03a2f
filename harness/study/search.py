"""Optuna studies over a search space, every trial trained by `run_trial` and logged to MLflow.

Sampler, pruner and storage are Optuna's own, chosen by name. A trial that
diverges or raises is recorded as FAIL with its reason and the study goes on;
an impossible combination of sampled params is PRUNED with the reason.
"""

import contextlib
import functools
import os
import socket
import warnings

import optuna
from optuna_integration import KerasPruningCallback
from rich.console import Console

from harness.redaction import redact
from harness.study.baselines import is_baseline_turn, sample_baseline
from harness.study.callbacks import ReportEpochs
from harness.study.lifecycle import open_lifecycle
from harness.study.progress import StudyProgress, full_study_line, run_label, stage_notes
from harness.study.records import (
    BASELINE_TURN,
    BENCHMARK_RUN,
    DUPLICATE_OF,
    SURPLUS,
    counted_trials,
    enqueued_key,
    enqueued_params,
    trials_taken,
)
from harness.study.settings import make_pruner, make_sampler
from harness.study.space import COST_OBJECTIVES
from harness.study.storage import open_storage
from harness.study.tracking import TrackingUnreachable, close_dead_runs, process_alive, process_started


class StudyFull(RuntimeError):
    """A worker asked for a trial the study no longer needs."""


class DuplicateRun(RuntimeError):
    """An enqueued run whose params and seed an earlier trial of the study holds (machines queueing at once)."""


def earlier_twin(study, trial):
    """The number of an earlier trial holding the same enqueued run as `trial` (waiting, running, or ended by its own
    doing), or None. Processes that queue runs at once can queue one twice; only the earliest trains."""
    trials = study.get_trials(deepcopy=False)
    counted = {t.number for t in counted_trials(study, trials)}
    live = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)
    key = enqueued_key(trial)
    for other in trials:
        if (
            other.number < trial.number
            and other.user_attrs.get(BENCHMARK_RUN)
            and not other.user_attrs.get(SURPLUS)
            and (other.state in live or other.number in counted)
            and enqueued_key(other) == key
        ):
            return other.number
    return None


def trial_params(trial, space):
    """The configuration a trial trained: its enqueued params, or its sampled ones with the space's fixed values."""
    if trial.user_attrs.get(BENCHMARK_RUN):
        return enqueued_params(trial)
    sampled = {**trial.params, "insertion": "none"} if trial.user_attrs.get(BASELINE_TURN) else trial.params
    return {**space.complete(sampled), "seed": space.training.seed}


def _set_metric_names(study, objectives):
    names = ["val_accuracy", *objectives[1:]]
    if study.metric_names != names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)


def name_objectives(storage):
    """Name the objectives of every study in `storage` (for dashboards), from each study's recorded objectives."""
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        _set_metric_names(study, study.user_attrs.get("objectives", ["accuracy"])[: len(study.directions)])


def open_study(settings, space, storage):
    """The stage's Optuna study, created or loaded, with the space and objectives recorded on it."""
    study = optuna.create_study(
        study_name=settings.optuna_study,
        storage=storage,
        sampler=make_sampler(settings.sampler, space, settings.seed),
        pruner=make_pruner(settings.pruner, space),
        directions=space.directions,
        load_if_exists=True,
    )
    for key, value in (
        ("space", space.source),
        ("dataset", space.dataset.name),
        ("epochs", space.training.epochs),
        ("objectives", space.objectives),
        ("stage", settings.stage),
    ):
        study.set_user_attr(key, value)
    _set_metric_names(study, space.objectives)
    return study


def is_surplus(study, trial, settings, shared):
    """Whether `trial` comes after the study was full: seeded stages run only their queued runs, and workers
    sharing a study (`shared`) can each pass the stop check before any of them asks (the earliest numbers win)."""
    if settings.stage != "search":
        return not trial.user_attrs.get(BENCHMARK_RUN)
    if not shared:
        return False
    before = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and not t.user_attrs.get(SURPLUS)]
    return trials_taken(study, before) >= settings.n_trials


def fail_dead_trials(study, tracker):
    """Mark FAIL the RUNNING trials whose worker is gone: on this host at once, elsewhere by heartbeat."""
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")  # none yet: its worker has just asked for it and is writing it
        if pid and trial.user_attrs.get("host") == host and not process_alive(pid, trial.user_attrs.get("started")):
            with contextlib.suppress(ValueError, RuntimeError):  # another worker got there first
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                tracker.close_run_of_stale_trial(study, trial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class Search:
    """One stage of a search: an Optuna study whose trials run through a `TrialLifecycle`, nested under
    one MLflow parent run (started here, or joined when `settings.parent_run_id` names one)."""

    def __init__(self, space, settings, *, console=None, dataset=None):
        self.space, self.settings, self.console = space, settings, console or Console()
        # The storage first: if it cannot be opened, nothing has been written anywhere.
        self.storage = open_storage(
            settings.storage,
            heartbeat_interval=settings.heartbeat_interval,
            stale_trial_callback=lambda study, trial: self.tracker.close_run_of_stale_trial(study, trial),
        )
        self.lifecycle = open_lifecycle(space, settings, self.console, dataset)
        self.tracker, self.dataset = self.lifecycle.tracker, self.lifecycle.dataset
        self.tracking_lost = None  # the TrackingUnreachable that stopped the study, if one did
        self.taken_over = None  # the number of this process's trial that another worker marked FAIL, if one was
        self.stood_down = 0  # duplicate runs this process skipped in its latest optimize call

    @property
    def parent_run_id(self):
        return self.lifecycle.parent_run_id

    @functools.cached_property
    def study(self):
        """The Optuna study, created or loaded on first use, with the shape of the data it trains on (a report
        builds its networks from it to time them)."""
        study = open_study(self.settings, self.space, self.storage)
        study.set_user_attr("input_shape", [int(d) for d in self.dataset.input_shape])
        study.set_user_attr("num_classes", int(self.dataset.num_classes))
        return study

    def parent_run(self):
        """This invocation's MLflow parent run: joined if `settings.parent_run_id` names one, else started and ended here."""
        settings = self.settings
        tags = {
            "space": self.space.source,
            "dataset": self.space.dataset.name,
            "optuna_storage": redact(settings.storage),
            "sampler": settings.sampler,
            "pruner": settings.pruner,
            "workers": str(settings.workers),
        }
        return self.lifecycle.parent_run(tags)

    def run(self):
        """Run trials until the study holds `n_trials` counted trials; return the study."""
        closed = self.close_what_dead_processes_left()
        if closed:
            self.console.print(f"closed {len(closed)} MLflow run(s) left RUNNING by a process that died")
        for line in stage_notes(self.space, self.settings):
            self.console.print(line)
        trials = self.study.get_trials(deepcopy=False)
        remaining = self.settings.n_trials - trials_taken(self.study, trials)
        if remaining <= 0:
            self.console.print(full_study_line(self.study, trials, self.settings))
            return self.study
        StudyProgress(self).optimize(remaining)
        if self.tracking_lost:
            raise self.tracking_lost
        return self.study

    @property
    def shares_study(self):
        """Whether other processes ask for this study's trials too: workers join a parent run started elsewhere."""
        return self.settings.parent_run_id is not None

    def close_what_dead_processes_left(self):
        """Close the MLflow runs and fail the trials that processes which died left RUNNING; return the runs' ids."""
        closed = close_dead_runs(self.tracker)
        fail_dead_trials(self.study, self.tracker)
        return closed

    def current_trials(self):
        """The study's trials, read after failing those whose worker died."""
        fail_dead_trials(self.study, self.tracker)
        return self.study.get_trials(deepcopy=False)

    def sample(self, trial):
        """A sampled trial's params; the ones the sampler did not choose (fixed values, a baseline turn's
        insertion) are kept as user attributes, so the trial's record holds everything it trained with."""
        if is_baseline_turn(trial.number, self.space, self.settings):
            trial.set_user_attr(BASELINE_TURN, True)
            params = sample_baseline(self.space, trial)
        else:
            params = self.space.sample(trial)
        params = self.space.complete(params)
        for name, value in params.items():
            if name not in trial.params:
                trial.set_user_attr(name, value)
        return params

    def _objective(self, trial):
        if is_surplus(self.study, trial, self.settings, self.shares_study):
            trial.set_user_attr(SURPLUS, True)
            self.study.stop()
            raise StudyFull(f"the study already had its {self.settings.n_trials} trials when this one was asked for")
        enqueued = trial.user_attrs.get(BENCHMARK_RUN)
        twin = earlier_twin(self.study, trial) if enqueued else None
        if twin is not None:
            trial.set_user_attr(SURPLUS, True)
            trial.set_user_attr(DUPLICATE_OF, twin)
            self.stood_down += 1
            raise DuplicateRun(f"trial #{twin} holds the same params and seed")
        params = {"seed": self.space.training.seed, **(enqueued_params(trial) if enqueued else self.sample(trial))}
        callbacks = _epoch_callbacks(trial, self.space, pruned=self.settings.stage == "search" and not enqueued)
        try:
            for key, value in (("host", socket.gethostname()), ("pid", os.getpid()), ("started", process_started())):
                trial.set_user_attr(key, value)  # which process trains it: a dead one's trials are failed
            label = run_label(trial, self.study, self.settings.stage)
            result = self.lifecycle.run(
                trial.number, params, self.space.training.epochs, callbacks, trial.set_user_attr, label
            )
        except TrackingUnreachable as error:  # no run to log this trial to: stop rather than fail trial after trial
            self.tracking_lost = error
            self.study.stop()
            raise
        except optuna.exceptions.UpdateFinishedTrialError:  # its run is closed; Optuna's tell of it fails next
            self.taken_over = trial.number
            raise
        return (result.best_val_accuracy, *(getattr(result, COST_OBJECTIVES[o]) for o in self.space.objectives[1:]))


def _epoch_callbacks(trial, space, *, pruned):
    """What a trial reports each epoch: its validation accuracy to the pruner where it may be `pruned`, else only
    the value (the baseline and seeded runs always train to the end); nothing in a multi-objective study, where
    Optuna takes no intermediate values."""
    if space.is_multi_objective:
        return []
    return [KerasPruningCallback(trial, "val_accuracy")] if pruned else [ReportEpochs(trial)]
