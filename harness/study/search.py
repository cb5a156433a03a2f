"""Optuna studies over a search space, every trial trained by `run_trial` and logged to MLflow.

Sampler, pruner and storage are Optuna's own, chosen by name. A trial that
diverges or raises is recorded as FAIL with its reason and the study goes on;
an impossible combination of sampled params is PRUNED with the reason.
"""

import contextlib
import dataclasses
import functools
import importlib.util
import os
import signal
import socket
import threading
import time
import warnings

import keras
import optuna
from optuna_integration import KerasPruningCallback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.study.lifecycle import open_lifecycle
from harness.study.records import (BASELINE, BASELINE_TURN, BENCHMARK_RUN, CONFIRM_SUFFIX, DUPLICATE_OF, OUTCOME, STAGES,
                                   SURPLUS, counted_trials, enqueued_key, enqueued_params)
from harness.study.space import COST_OBJECTIVES
from harness.redaction import redact
from harness.study.storage import open_storage, resolve_stores
from harness.study.tracking import TrackingUnreachable, close_dead_runs, process_alive

SAMPLERS = ("tpe", "random", "grid", "nsga2", "gp")
SAVE_MODELS = ("best", "all", "none")  # which search trials save model.keras; seeded runs always do
PRUNERS = ("median", "hyperband", "none")


class StudyFull(RuntimeError):
    """A worker asked for a trial the study no longer needs."""


class DuplicateRun(RuntimeError):
    """An enqueued run whose params and seed an earlier trial of the study holds (machines queueing at once)."""


class ReportEpochs(keras.callbacks.Callback):
    """Report each epoch's validation accuracy to an Optuna trial, which is never pruned (the baseline's)."""

    def __init__(self, trial):
        super().__init__()
        self.trial = trial

    def on_epoch_end(self, epoch, logs=None):
        self.trial.report(float((logs or {}).get("val_accuracy", float("nan"))), step=epoch)


@contextlib.contextmanager
def deferred_interrupts(on_interrupt):
    """Turn the first Ctrl-C into a call to `on_interrupt` rather than an exception.

    A KeyboardInterrupt raised at a random point can be swallowed by a library
    or leave its bookkeeping half-done; a flag is checked where stopping is safe.
    A second Ctrl-C interrupts at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGINT, previous)
        on_interrupt()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        if self.pruner not in PRUNERS:
            raise ValueError(f"pruner must be one of {', '.join(PRUNERS)}; got {self.pruner!r}")
        if self.n_trials < 1:
            raise ValueError(f"trials must be at least 1, got {self.n_trials}")
        if self.baseline_every < 0:
            raise ValueError(f"baseline_every must be at least 0 (0: no baseline turns), got {self.baseline_every}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.save_models not in SAVE_MODELS:
            raise ValueError(f"save_models must be one of {', '.join(SAVE_MODELS)}; got {self.save_models!r}")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}; got {self.stage!r}")
        # Optuna imports PyTorch only when the sampler first samples: without this check every trial would fail.
        if self.sampler == "gp" and importlib.util.find_spec("torch") is None:
            raise ValueError("--sampler gp needs PyTorch, which is not installed: pip install torch, or pick another sampler")
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


def earlier_twin(study, trial):
    """The number of an earlier trial holding the same enqueued run as `trial` (waiting, running, or ended by its own
    doing), or None. Processes that queue runs at once can queue one twice; only the earliest trains."""
    trials = study.get_trials(deepcopy=False)
    counted = {t.number for t in counted_trials(study, trials)}
    live = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)
    key = enqueued_key(trial)
    for other in trials:
        if (other.number < trial.number and other.user_attrs.get(BENCHMARK_RUN) and not other.user_attrs.get(SURPLUS)
                and (other.state in live or other.number in counted) and enqueued_key(other) == key):
            return other.number
    return None


def trial_params(trial, space):
    """The configuration a trial trained: its enqueued params, or its sampled ones with the space's fixed values."""
    if trial.user_attrs.get(BENCHMARK_RUN):
        return enqueued_params(trial)
    sampled = {**trial.params, "insertion": "none"} if trial.user_attrs.get(BASELINE_TURN) else trial.params
    return {**space.complete(sampled), "seed": space.training.seed}


def is_baseline_turn(number, space, settings):
    """Whether sampled trial `number` tunes the baseline: every `baseline_every`th trial of a search whose space
    searches a hyperparameter the baseline shares. The grid sampler has none (a turn would use up a grid point)."""
    return (settings.stage == "search" and settings.sampler != "grid" and settings.baseline_every > 0
            and bool(space.searched_baseline_keys) and number % settings.baseline_every == settings.baseline_every - 1)


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
        _set_metric_names(study, study.user_attrs.get("objectives", ["accuracy"])[:len(study.directions)])


def best_value(trials):
    """The best first objective (validation accuracy) among complete `trials`, or None."""
    values = [t.values[0] for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return max(values) if values else None


def outcome_counts(study, trials=None):
    """How many counted trials ended COMPLETE, PRUNED and FAIL."""
    states = [t.user_attrs[OUTCOME] for t in counted_trials(study, trials)]
    return {state: states.count(state) for state in ("COMPLETE", "PRUNED", "FAIL")}


def outcome_line(label, study):
    """`label: N complete, N pruned, N fail` for the study's counted trials."""
    return f"{label}: " + ", ".join(f"{n} {state.lower()}" for state, n in outcome_counts(study).items())


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
    for key, value in (("space", space.source), ("dataset", space.dataset.name), ("epochs", space.training.epochs),
                       ("objectives", space.objectives), ("stage", settings.stage)):
        study.set_user_attr(key, value)
    _set_metric_names(study, space.objectives)
    return study


def trials_taken(study, trials):
    """Of `trials` (the study's, just read), those that count toward n_trials: finished ones and those still running."""
    running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    return len(counted_trials(study, trials)) + len(running)


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
        if pid and trial.user_attrs.get("host") == host and not process_alive(pid):
            with contextlib.suppress(ValueError, RuntimeError):  # another worker got there first
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                tracker.close_run_of_stale_trial(study, trial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def trial_line(trial, best, stage):
    """One line for a finished trial; `best` is the study's best validation accuracy so far, or None."""
    state = trial.user_attrs.get(OUTCOME) or trial.state.name
    flops = trial.user_attrs.get("flops")
    cost = f"{flops / 1e6:6.2f} MFLOPs" if flops else "      -      "
    if stage != "search":  # seeded runs are judged on the test set
        test = trial.user_attrs.get("test_accuracy")
        accuracy, best = (f"test acc {test:.3f}" if test is not None else "test acc   -  "), ""
    else:
        accuracy = f"val acc {trial.values[0]:.3f}" if trial.values else "val acc   -  "
        best = "best   -  " if best is None else f"best {best:.3f}"
    shown = trial.params or enqueued_params(trial)
    params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
    reason = f" [{trial.user_attrs['failure_reason'][:80]}]" if "failure_reason" in trial.user_attrs else ""
    return f"#{trial.number:<3} {state:<8} {accuracy}  {cost}  {best}  {params}{reason}"


def stage_notes(space, settings):
    """What a user should know before this stage's trials start."""
    if space.is_multi_objective and settings.pruner != "none":
        yield "pruning is off: Optuna cannot prune multi-objective trials"
    if settings.stage == "search" and space.searched_baseline_keys:
        searched = ", ".join(space.searched_baseline_keys)
        if settings.sampler == "grid" or not settings.baseline_every:
            yield f"the baseline is tuned only where the space's insertion choices include none (over {searched})"
        else:
            yield (f"1 sampled trial in {settings.baseline_every} tunes the baseline over the hyperparameters it "
                   f"shares ({searched}), so the tuned baseline has a search of its own")
    if settings.stage == "confirm":
        yield ("confirmation: the search's best configurations, their matched baselines and the tuned baseline, "
               "re-trained with fresh seeds and judged on the test set")


def full_study_line(study, trials, settings):
    """What a study that already holds `settings.n_trials` trials holds."""
    counts, running = outcome_counts(study, trials), sum(t.state.name == "RUNNING" for t in trials)
    return (f"study {settings.optuna_study!r} already holds {sum(counts.values()) + running} trials "
            f"({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed, {running} running), "
            f"as many as --trials {settings.n_trials}: nothing new to run")


def unfilled_line(search, elapsed):
    """None if the stage ended as asked (its study holds `n_trials` counted trials, or its `timeout` passed in the
    `elapsed` seconds it ran), else the line that says how far it got: one rule for a process and a worker pool."""
    settings = search.settings
    held = trials_taken(search.study, search.current_trials())  # another process may still train the last ones
    if held >= settings.n_trials or (settings.timeout is not None and elapsed >= settings.timeout):
        return None
    return (f"{settings.stage} {settings.optuna_study!r} holds {held} of its {settings.n_trials} trials; the failure "
            "reasons are above, and the same command resumes it")


def where(settings):
    """Lines telling a user where a search's results are."""
    return [
        f"Optuna storage: {redact(settings.storage)} (study {settings.study_name!r})",
        f"MLflow store:   {redact(settings.tracking_uri)} (experiment {settings.study_name!r})",
        f"Browse runs:    harness ui --tracking-uri '{redact(settings.tracking_uri)}'",
    ]


class Search:
    """One stage of a search: an Optuna study whose trials run through a `TrialLifecycle`, nested under
    one MLflow parent run (started here, or joined when `settings.parent_run_id` names one)."""

    def __init__(self, space, settings, console=None, dataset=None):
        self.space, self.settings, self.console = space, settings, console or Console()
        # The storage first: if it cannot be opened, nothing has been written anywhere.
        self.storage = open_storage(settings.storage, settings.heartbeat_interval,
                                    lambda study, trial: self.tracker.close_run_of_stale_trial(study, trial))
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

    def queue_baseline(self):
        """Queue the plain CNN as the next trial unless the study holds a baseline that waits, runs or completed.

        It trains with the space's fixed training params and is never pruned,
        so every search has its reference, and a resumed search does not train it twice.
        """
        kept = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE)
        if any(t.user_attrs.get(BASELINE) and t.state in kept for t in self.study.get_trials(deepcopy=False)):
            return
        params = {**self.space.baseline_params(), "seed": self.space.training.seed}
        self.study.enqueue_trial({}, user_attrs={**params, BENCHMARK_RUN: True, BASELINE: True})

    def parent_run(self):
        """This invocation's MLflow parent run: joined if `settings.parent_run_id` names one, else started and ended here."""
        settings = self.settings
        return self.lifecycle.parent_run({
            "space": self.space.source, "dataset": self.space.dataset.name, "sampler": settings.sampler,
            "pruner": settings.pruner, "workers": str(settings.workers), "optuna_storage": redact(settings.storage),
        })

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
            params = self.space.sample_baseline(trial)
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
        if self.space.is_multi_objective:
            pruning = []  # Optuna takes no intermediate values from multi-objective trials
        elif self.settings.stage == "search" and not enqueued:
            pruning = [KerasPruningCallback(trial, "val_accuracy")]
        else:
            pruning = [ReportEpochs(trial)]  # the baseline and seeded runs always train to the end
        try:
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
            result = self.lifecycle.run(trial.number, params, self.space.training.epochs, pruning, trial.set_user_attr)
        except TrackingUnreachable as error:  # no run to log this trial to: stop rather than fail trial after trial
            self.tracking_lost = error
            self.study.stop()
            raise
        except optuna.exceptions.UpdateFinishedTrialError:  # its run is closed; Optuna's tell of it fails next
            self.taken_over = trial.number
            raise
        return (result.best_val_accuracy, *(getattr(result, COST_OBJECTIVES[o]) for o in self.space.objectives[1:]))



class StudyProgress:
    """A search's study optimised under a progress bar, one line per finished trial, and a gentle Ctrl-C."""

    def __init__(self, search):
        self.search = search
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=search.console, transient=True)

    def optimize(self, remaining):
        """Run up to `remaining` trials; raises KeyboardInterrupt after a Ctrl-C once the trial in flight has ended."""
        search, lifecycle, n_trials = self.search, self.search.lifecycle, self.search.settings.n_trials
        with self.bar:
            self.task = self.bar.add_task(search.settings.optuna_study, total=n_trials, completed=n_trials - remaining)
            lifecycle.progress = self.bar
            with deferred_interrupts(self.interrupt):
                self._optimize_past_uncounted_trials(remaining)
            lifecycle.progress = None
        if lifecycle.interrupted:
            raise KeyboardInterrupt

    def _optimize_past_uncounted_trials(self, remaining):
        """Optuna's optimize, resumed while trials that do not count cut it short: duplicate runs that stood down,
        or a trial that another worker marked FAIL while it ran here (a heartbeat later than the grace period, on a
        busy machine). The study goes on without them."""
        search, settings = self.search, self.search.settings
        deadline = time.monotonic() + settings.timeout if settings.timeout else None
        while remaining > 0:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            search.stood_down = 0
            try:
                search.study.optimize(search._objective, n_trials=remaining, timeout=timeout,
                                      catch=(Exception,), callbacks=[self.after_trial])
                if not search.stood_down:
                    return
            except ValueError:  # "Cannot tell a FAIL trial"
                if search.taken_over is None:
                    raise
                self.bar.console.print(f"{settings.stage} #{search.taken_over}: another worker marked it FAIL while it "
                                       "ran (its heartbeat came late); its run is closed, and this worker goes on",
                                       highlight=False, markup=False)
                search.taken_over = None
                if settings.stage == "search":
                    search.queue_baseline()  # in case it was the baseline
            remaining = settings.n_trials - trials_taken(search.study, search.current_trials())

    def interrupt(self):
        self.search.lifecycle.interrupted = True
        self.bar.console.print("stopping: the trial in flight ends at its next batch (Ctrl-C again to stop at once)")

    def after_trial(self, study, trial):
        """Print the trial's line, log the best so far, and stop the study once it is full or its budget spent."""
        search, settings = self.search, self.search.settings
        if DUPLICATE_OF in trial.user_attrs:
            self.bar.console.print(f"{settings.stage} #{trial.number}: the same run as #{trial.user_attrs[DUPLICATE_OF]}, "
                                   "queued at once by another process; skipped", highlight=False, markup=False)
        if trial.user_attrs.get(SURPLUS):
            return
        # One read of the study per trial; only workers sharing it can leave dead trials behind meanwhile.
        trials = search.current_trials() if search.shares_study else study.get_trials(deepcopy=False)
        counted = counted_trials(study, trials)
        self.bar.update(self.task, completed=len(counted))
        best = best_value(trials)
        self.bar.console.print(trial_line(trial, best, settings.stage), soft_wrap=True, highlight=False, markup=False)
        if best is not None and settings.stage == "search":
            search.tracker.log_best_so_far(search.parent_run_id, best, len(counted), trial.number)
        epochs_trained = sum(len(t.intermediate_values) for t in counted)  # one intermediate value per epoch
        budget_spent = settings.epoch_budget is not None and epochs_trained >= settings.epoch_budget
        # Other workers' trials in flight count too: the study stops at n_trials, not n_trials x workers.
        if trials_taken(study, trials) >= settings.n_trials or search.lifecycle.interrupted or budget_spent:
            study.stop()
