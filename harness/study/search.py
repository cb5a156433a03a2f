"""Optuna studies over a search space, every trial trained by `run_trial` and logged to MLflow.

Sampler, pruner and storage are Optuna's own, chosen by name. A trial that
diverges or raises is recorded as FAIL with its reason and the study goes on;
an impossible combination of sampled params is PRUNED with the reason.
"""

import contextlib
import dataclasses
import datetime
import functools
import os
import socket
import time
import warnings

import optuna
from rich.console import Console

from harness.redaction import redact
from harness.study.baselines import queue_baseline
from harness.study.lifecycle import open_lifecycle
from harness.study.objective import TrialObjective
from harness.study.progress import (
    StageProgress,
    deferred_interrupts,
    duplicate_line,
    full_study_line,
    run_label,
    stage_notes,
    taken_over_line,
    trial_line,
)
from harness.study.records import DUPLICATE_OF, SURPLUS, best_value, counted_trials, trials_taken
from harness.study.settings import make_pruner, make_sampler
from harness.study.space import portable_space
from harness.study.storage import open_storage
from harness.study.tracking import close_dead_runs, process_alive


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


def open_study(settings, space, storage, dataset):
    """The stage's Optuna study, created or loaded, with the space, objectives and the shape of `dataset` recorded on
    it (a report builds the study's networks from that to time them)."""
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
        ("input_shape", [int(d) for d in dataset.input_shape]),
        ("num_classes", int(dataset.num_classes)),
    ):
        study.set_user_attr(key, value)
    _set_metric_names(study, space.objectives)
    return study


def fail_dead_trials(study, tracker):
    """Mark FAIL the RUNNING trials whose worker is gone: on this host at once, one never claimed after a minute,
    elsewhere by heartbeat."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        reason = why_abandoned(trial)
        if reason:
            with contextlib.suppress(ValueError, RuntimeError):  # another worker got there first
                study._storage.set_trial_user_attr(trial._trial_id, "failure_reason", reason)
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                tracker.close_run_of_stale_trial(study, trial, reason)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


CLAIM_WINDOW = datetime.timedelta(minutes=1)  # how long a worker may take from asking for a trial to claiming it


def why_abandoned(trial):
    """Why a running `trial` is known to have lost its worker, or None: its process on this host died, or the
    process that asked for it died before it claimed it (its pid still unwritten past `CLAIM_WINDOW`)."""
    host, pid = trial.user_attrs.get("host"), trial.user_attrs.get("pid")
    if pid is None:
        return None if being_claimed(trial) else "the process that asked for it died before it claimed it"
    if host == socket.gethostname() and not process_alive(pid, trial.user_attrs.get("started")):
        return f"its process ({pid} on {host}) died while it ran"
    return None


def being_claimed(trial):
    """Whether an unclaimed `trial` was asked for recently enough that its worker may still be claiming it."""
    return trial.datetime_start is not None and datetime.datetime.now() - trial.datetime_start < CLAIM_WINDOW


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

    @functools.cached_property
    def objective(self):
        """What Optuna calls for each of this stage's trials."""
        return TrialObjective(self.study, self.space, self.settings, self.lifecycle, shared=self.shares_study)

    @property
    def parent_run_id(self):
        return self.lifecycle.parent_run_id

    @functools.cached_property
    def study(self):
        """The Optuna study, created or loaded on first use."""
        return open_study(self.settings, self.space, self.storage, self.dataset)

    def parent_run(self):
        """This invocation's MLflow parent run: joined if `settings.parent_run_id` names one, else started and ended here."""
        return self.lifecycle.parent_run(parent_run_tags(self.space, self.settings))

    def run(self, optimize=None):
        """Run trials until the study holds `n_trials` counted trials, its timeout passes or its epoch budget is
        spent; return the study. A Ctrl-C ends the trial in flight at its next batch, then raises KeyboardInterrupt.
        `optimize(remaining, shown)` runs the trials: Optuna's loop here by default, Ray Tune's for `RayPool`."""
        for line in stage_notes(self.space, self.settings, closed=self.close_what_dead_processes_left()):
            self.console.print(line)
        trials = self.study.get_trials(deepcopy=False)
        remaining = self.settings.n_trials - trials_taken(self.study, trials)
        if remaining <= 0:
            self.console.print(full_study_line(self.study, trials, self.settings))
            return self.study
        open_to_joiners(self)
        total = self.settings.n_trials
        with StageProgress(self.console, self.settings.optuna_study, total, total - remaining) as shown:
            self.lifecycle.progress = shown.bar  # a trial's epochs are drawn under the stage's bar
            with deferred_interrupts(lambda: self._interrupt(shown)):
                run_trials(self, optimize or self._optimize, remaining, shown)
            self.lifecycle.progress = None
        if self.lifecycle.interrupted:
            raise KeyboardInterrupt
        if self.objective.tracking_lost:
            raise self.objective.tracking_lost
        return self.study

    def _optimize(self, remaining, shown):
        """Optuna's optimize, resumed while trials that do not count cut it short (duplicate runs that stood down, a
        trial another worker marked FAIL while it ran here): the study goes on without them."""
        objective, settings = self.objective, self.settings
        deadline = time.monotonic() + settings.timeout if settings.timeout else None
        while remaining > 0:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            objective.stood_down = 0
            try:
                self.study.optimize(
                    objective,
                    n_trials=remaining,
                    timeout=timeout,
                    catch=(Exception,),
                    callbacks=[lambda study, trial: self.after_trial(trial, shown) and study.stop()],
                )
                if not objective.stood_down:
                    return
            except ValueError:  # "Cannot tell a FAIL trial"
                if objective.taken_over is None:
                    raise
                shown.say(taken_over_line(objective.taken_over, settings.stage))
                objective.taken_over = None
                if settings.stage == "search":
                    queue_baseline(self.study, self.space)  # in case it was the baseline
            remaining = settings.n_trials - trials_taken(self.study, self.current_trials())

    def after_trial(self, trial, shown):
        """Show the trial's line and log the best so far; whether the stage is over (full, its budget spent)."""
        study, settings = self.study, self.settings
        if DUPLICATE_OF in trial.user_attrs:
            shown.say(duplicate_line(trial, settings.stage))
        if trial.user_attrs.get(SURPLUS):
            return False
        # One read of the study per trial; only workers sharing it can leave dead trials behind meanwhile.
        trials = self.current_trials() if self.shares_study else study.get_trials(deepcopy=False)
        counted = counted_trials(study, trials)
        best = best_value(trials)
        shown.advance(len(counted))
        shown.say(trial_line(trial, best, settings.stage, run_label(trial, study, settings.stage)))
        if best is not None and settings.stage == "search":
            self.tracker.log_best_so_far(self.parent_run_id, best, len(counted), trial.number)
        return stage_is_over(study, trials, counted, settings, interrupted=self.lifecycle.interrupted)

    def _interrupt(self, shown):
        self.lifecycle.interrupted = True
        shown.say(STOPPING)

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


JOIN = "join"  # a stage's study attribute: what joiners need (`open_to_joiners`)
JOINER_POLL = 2  # seconds between looks at the trials joiners run
STOPPING = "stopping: the trial in flight ends at its next batch (Ctrl-C again to stop at once)"


def open_to_joiners(search):
    """Record on the study what `harness worker --study` needs to join `search`'s stage from any machine, if
    `search` owns the stage: the space and the stage's settings under its parent run, without the store URLs (a
    password stays out of the study)."""
    if not search.shares_study:
        settings = dataclasses.replace(search.settings, parent_run_id=search.parent_run_id, seed=None)
        shared = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("storage", "tracking_uri")}
        search.study.set_user_attr(JOIN, {"space": portable_space(search.space), "settings": shared})


def run_trials(search, optimize, remaining, shown):
    """Run `remaining` trials of `search`'s stage through `optimize`. Then, as the stage's owner, before its parent
    run closes: wait for the trials that joiners still run (failing those whose worker died), and run the ones the
    study then lacks if it has no time or epoch budget."""
    optimize(remaining, shown)
    if search.shares_study:
        return  # a joiner: the stage's owner waits
    settings = search.settings
    while not search.lifecycle.interrupted:
        trials = search.current_trials()
        if any(held_by_another_process(t) for t in trials if t.state == optuna.trial.TrialState.RUNNING):
            time.sleep(JOINER_POLL)
            continue
        remaining = settings.n_trials - trials_taken(search.study, trials)
        if remaining <= 0 or settings.timeout is not None or settings.epoch_budget is not None:
            return
        optimize(remaining, shown)


def held_by_another_process(trial):
    """Whether a running `trial` is another process's: claimed by it, or asked for in the last minute and being
    claimed (an older unclaimed one was left by a process that died at once: `fail_dead_trials` fails it)."""
    pid = trial.user_attrs.get("pid")
    if pid is not None:
        return (trial.user_attrs.get("host"), pid) != (socket.gethostname(), os.getpid())
    return being_claimed(trial)


def stage_is_over(study, trials, counted, settings, *, interrupted):
    """Whether a stage stops after its latest trial (`counted`: the counted ones among `trials`): the study holds
    `n_trials` (other workers' trials in flight count too, so it stops at n_trials, not n_trials x workers), its
    epoch budget is spent, or a Ctrl-C came."""
    epochs_trained = sum(len(t.intermediate_values) for t in counted)  # one intermediate value per epoch
    budget_spent = settings.epoch_budget is not None and epochs_trained >= settings.epoch_budget
    return trials_taken(study, trials) >= settings.n_trials or interrupted or budget_spent


def parent_run_tags(space, settings):
    """What a stage's MLflow parent run is tagged with: the space, its dataset, the storage, sampler, pruner, workers."""
    return {
        "space": space.source,
        "dataset": space.dataset.name,
        "optuna_storage": redact(settings.storage),
        "sampler": settings.sampler,
        "pruner": settings.pruner,
        "workers": str(settings.workers),
    }
