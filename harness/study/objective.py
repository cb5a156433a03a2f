"""What Optuna calls for each trial of a stage: the trial's params sampled or taken from the queue, its network
trained by the stage's `TrialLifecycle`, and its objective values returned.

A trial asked for after the study was full, or a queued run another process
already holds, stands down without training (`StudyFull`, `DuplicateRun`).
"""

import os
import socket

import optuna
from optuna_integration import KerasPruningCallback

from harness.study.baselines import is_baseline_turn, sample_baseline
from harness.study.callbacks import ReportEpochs
from harness.study.progress import run_label
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
from harness.study.space import COST_OBJECTIVES
from harness.study.tracking import TrackingUnreachable, process_started


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


def is_surplus(study, trial, settings, shared):
    """Whether `trial` comes after the study was full: seeded stages run only their queued runs, and workers
    sharing a study (`shared`) can each pass the stop check before any of them asks (the earliest numbers win)."""
    if settings.stage != "search":
        return not trial.user_attrs.get(BENCHMARK_RUN)
    if not shared:
        return False
    before = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and not t.user_attrs.get(SURPLUS)]
    return trials_taken(study, before) >= settings.n_trials


class TrialObjective:
    """Trains one trial of `study` through `lifecycle` and returns its objective values; `shared` says whether
    other processes ask for the study's trials too. Counts what the stage's loop needs to know: the duplicate runs
    it `stood_down` from, a trial another worker `taken_over`, and the `tracking_lost` error that stopped it."""

    def __init__(self, study, space, settings, lifecycle, *, shared):
        self.study, self.space, self.settings, self.lifecycle, self.shared = study, space, settings, lifecycle, shared
        self.tracking_lost = None  # the TrackingUnreachable that stopped the study, if one did
        self.taken_over = None  # the number of this process's trial that another worker marked FAIL, if one was
        self.stood_down = 0  # duplicate runs this process skipped in its latest optimize call

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

    def prepare(self, trial):
        """The params `trial` trains: taken from the queue or sampled. Raises `StudyFull` or `DuplicateRun` for a
        trial that stands down instead."""
        if is_surplus(self.study, trial, self.settings, self.shared):
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
        return {"seed": self.space.training.seed, **(enqueued_params(trial) if enqueued else self.sample(trial))}

    def prunable(self, trial):
        """Whether the pruner may stop `trial`: a sampled search trial (the baseline and seeded runs train to the
        end)."""
        return self.settings.stage == "search" and not trial.user_attrs.get(BENCHMARK_RUN)

    def __call__(self, trial):
        params = self.prepare(trial)
        callbacks = _epoch_callbacks(trial, self.space, pruned=self.prunable(trial))
        try:
            claim(trial)
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
        return objective_values(result, self.space)


def claim(trial):
    """Record which process holds `trial` (host, pid, its start time): a dead one's trials are failed."""
    for key, value in (("host", socket.gethostname()), ("pid", os.getpid()), ("started", process_started())):
        trial.set_user_attr(key, value)


def objective_values(result, space):
    """A trained trial's objective values, in the order of `space.objectives`: its best validation accuracy first."""
    return (result.best_val_accuracy, *(getattr(result, COST_OBJECTIVES[o]) for o in space.objectives[1:]))


def _epoch_callbacks(trial, space, *, pruned):
    """What a trial reports each epoch: its validation accuracy to the pruner where it may be `pruned`, else only
    the value (the baseline and seeded runs always train to the end); nothing in a multi-objective study, where
    Optuna takes no intermediate values."""
    if space.is_multi_objective:
        return []
    return [KerasPruningCallback(trial, "val_accuracy")] if pruned else [ReportEpochs(trial)]
