"""Optuna studies over a search space, every trial trained by `run_trial` and logged to MLflow.

Sampler, pruner and storage are Optuna's own, chosen by name. A trial that
diverges or raises is recorded as FAIL with its reason and the study goes on;
an impossible combination of sampled params is PRUNED with the reason.
"""

import contextlib
import dataclasses
import functools
import os
import signal
import socket
import threading
import time
import warnings
from pathlib import Path

import keras
import optuna
from optuna_integration import KerasPruningCallback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.training import data
from harness.model import check_params
from harness.params import PARAM_KEYS
from harness.study.storage import JOURNAL_PREFIX, open_storage, redact
from harness.study.space import COST_OBJECTIVES
from harness.study.tracking import Tracker, TrackingUnreachable, process_alive
from harness.training.trial import run_trial, split_params

SAMPLERS = ("tpe", "random", "grid", "nsga2", "gp")
SAVE_MODELS = ("best", "all", "none")  # which search trials save model.keras; seeded runs always do
PRUNERS = ("median", "hyperband", "none")
OUTCOME = "outcome"  # user attr set when a trial ends by its own doing; its absence means its process died
BENCHMARK_RUN = "benchmark"  # user attr of an enqueued run (baseline, confirmation, benchmark), whose other attrs are its params
BASELINE = "baseline"  # user attr of the search's enqueued baseline trial
SURPLUS = "surplus"  # user attr of a trial asked for once the study was full (workers asking at once); it never trains
# search: sampled trials, judged on validation. confirm and benchmark: fixed configurations with seeds, judged on test.
STAGES = ("search", "confirm", "benchmark")
CONFIRM_SUFFIX = "-confirm"  # the Optuna study holding a search's confirmation runs


def default_home():
    """Where embedded defaults keep their files: $HARNESS_HOME or ./harness-runs."""
    return Path(os.environ.get("HARNESS_HOME", "harness-runs")).resolve()


def sqlite_url(path):
    # An absolute path after sqlite:/// gives the four slashes SQLAlchemy expects.
    return f"sqlite:///{Path(path).resolve()}"


def default_stores(workers=1):
    """The embedded defaults: (Optuna storage URL, MLflow tracking URI) under `default_home()`."""
    home = default_home()
    # Many processes on one SQLite file lock each other out; Optuna's journal file does not.
    storage = f"{JOURNAL_PREFIX}{home / 'optuna-journal.log'}" if workers > 1 else sqlite_url(home / "optuna.db")
    return storage, sqlite_url(home / "mlflow.db")


class TrialDiverged(RuntimeError):
    """Training produced a non-finite loss."""


class StudyFull(RuntimeError):
    """A worker asked for a trial the study no longer needs."""


class ReportEpochs(keras.callbacks.Callback):
    """Report each epoch's validation accuracy to an Optuna trial, which is never pruned (the baseline's)."""

    def __init__(self, trial):
        super().__init__()
        self.trial = trial

    def on_epoch_end(self, epoch, logs=None):
        self.trial.report(float((logs or {}).get("val_accuracy", float("nan"))), step=epoch)


class TrialProgress(keras.callbacks.Callback):
    """The trial in flight: epoch x/y, validation accuracy and time left.

    On a terminal, a transient bar under the study's (advanced every batch,
    described every epoch); elsewhere, one line per epoch, so logs stay short.
    """

    async_safe = True  # Keras runs batch hooks off the training loop's thread

    def __init__(self, console, label, epochs, progress=None):
        super().__init__()
        self.console, self.label, self.epochs = console, label, epochs
        self.progress = progress if progress is not None and console.is_terminal else None
        self.task = None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        if self.progress is not None:
            self.task = self.progress.add_task(f"{self.label} epoch 1/{self.epochs}",
                                               total=self.epochs * (self.params.get("steps") or 1))

    def on_train_batch_end(self, batch, logs=None):
        if self.task is not None:
            self.progress.advance(self.task)

    def on_epoch_end(self, epoch, logs=None):
        done, elapsed = epoch + 1, time.perf_counter() - self.start
        accuracy = (logs or {}).get("val_accuracy")
        text = (f"{self.label} epoch {done}/{self.epochs}"
                + (f", val acc {float(accuracy):.3f}" if accuracy is not None else "")
                + f", {elapsed:.0f} s, about {elapsed / done * (self.epochs - done):.0f} s left")
        if self.task is not None:
            self.progress.update(self.task, description=text)
        else:
            self.console.print(text, highlight=False, markup=False)

    def on_train_end(self, logs=None):
        if self.task is not None:
            self.progress.remove_task(self.task)


class StopOnRequest(keras.callbacks.Callback):
    """End training at the next batch once `requested()` is true."""

    async_safe = True  # Keras runs batch hooks off the training loop's thread

    def __init__(self, requested):
        super().__init__()
        self.requested = requested

    def on_train_batch_end(self, batch, logs=None):
        if self.requested():
            self.model.stop_training = True


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

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        if self.pruner not in PRUNERS:
            raise ValueError(f"pruner must be one of {', '.join(PRUNERS)}; got {self.pruner!r}")
        if self.n_trials < 1:
            raise ValueError(f"trials must be at least 1, got {self.n_trials}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.save_models not in SAVE_MODELS:
            raise ValueError(f"save_models must be one of {', '.join(SAVE_MODELS)}; got {self.save_models!r}")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}; got {self.stage!r}")
        default_storage, default_tracking_uri = default_stores(self.workers)
        if self.storage is None or self.tracking_uri is None:
            default_home().mkdir(parents=True, exist_ok=True)
        self.storage = self.storage or default_storage
        self.tracking_uri = self.tracking_uri or default_tracking_uri
        self.artifact_root = (default_home() / "artifacts").as_uri() if self.tracking_uri.startswith("sqlite") else None

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
    try:
        return optuna.samplers.GPSampler(seed=seed)
    except ImportError as error:
        raise ValueError(f"the gp sampler needs PyTorch ({error}); install torch or pick another sampler") from None


def make_pruner(name, space):
    if name == "none" or space.is_multi_objective:
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=space.training.epochs)


def enqueued_params(trial):
    """The params an enqueued run (baseline, confirmation, benchmark) carries in its user attributes; {} otherwise."""
    if not trial.user_attrs.get(BENCHMARK_RUN):
        return {}
    return {k: trial.user_attrs[k] for k in PARAM_KEYS if k in trial.user_attrs}


def trial_params(trial, space):
    """The configuration a trial trained: its enqueued params, or its sampled ones with the space's fixed values."""
    if trial.user_attrs.get(BENCHMARK_RUN):
        return enqueued_params(trial)
    return {**space.complete(trial.params), "seed": space.training.seed}


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


def counted_trials(study, trials=None):
    """Trials that ended by their own doing: complete, pruned, or failed with a recorded reason.

    `trials` is the study's trials when the caller has just read them.
    """
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    return [t for t in trials if OUTCOME in t.user_attrs and t.state.is_finished()]


class Search:
    """One `harness search` invocation: a study, its MLflow experiment and parent run."""

    def __init__(self, space, settings, console=None, dataset=None):
        self.space = space
        self.settings = settings
        self.console = console or Console()
        self.dataset = dataset or data.load(
            space.dataset.name,
            data_dir=space.dataset.data_dir,
            train_size=space.dataset.train_size,
            val_size=space.dataset.val_size,
            test_size=space.dataset.test_size,
            seed=space.training.seed,
        )
        # The storage first: if it cannot be opened, nothing has been written anywhere.
        self.storage = open_storage(settings.storage, settings.heartbeat_interval,
                                    lambda study, trial: self.tracker.close_run_of_stale_trial(study, trial))
        self.tracker = Tracker(settings.tracking_uri, settings.study_name, settings.artifact_root, default_home() / "spool",
                               lambda line: self.console.print(line, markup=False, highlight=False, soft_wrap=True))
        self.parent_run_id = settings.parent_run_id
        self.parent_status = "FINISHED"  # how the parent run ends if nothing goes wrong
        self.interrupted = False
        self.tracking_lost = None  # the TrackingUnreachable that stopped the study, if one did
        self.best_saved = float("-inf")  # the best validation accuracy whose model this process saved
        self.progress = None  # the study's progress bar while `run` runs

    @functools.cached_property
    def study(self):
        """The Optuna study, created or loaded on first use (the keras-tuner engine never uses it)."""
        settings, space = self.settings, self.space
        study = optuna.create_study(
            study_name=settings.optuna_study,
            storage=self.storage,
            sampler=make_sampler(settings.sampler, space, settings.seed),
            pruner=make_pruner(settings.pruner, space),
            directions=space.directions,
            load_if_exists=True,
        )
        study.set_user_attr("space", space.source)
        study.set_user_attr("dataset", space.dataset.name)
        study.set_user_attr("epochs", space.training.epochs)
        study.set_user_attr("objectives", space.objectives)
        study.set_user_attr("stage", settings.stage)
        _set_metric_names(study, space.objectives)
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

    @contextlib.contextmanager
    def parent_run(self):
        """This invocation's MLflow parent run: joined if `settings.parent_run_id` names one, else started and ended here."""
        if self.parent_run_id is not None:
            yield self.parent_run_id
            return
        self.parent_run_id = self.start_parent()
        status = "KILLED"
        try:
            yield self.parent_run_id
            status = self.parent_status
        except Exception:
            status = "FAILED"
            raise
        finally:
            self.tracker.end_parent(self.parent_run_id, status)

    def run(self):
        """Run trials until the study holds `n_trials` counted trials; return the study.

        Trials nest under `parent_run_id` (see `parent_run`).
        """
        closed = self.tracker.close_dead_runs()
        if closed:
            self.console.print(f"closed {len(closed)} MLflow run(s) left RUNNING by a process that died")
        if self.space.is_multi_objective and self.settings.pruner != "none":
            self.console.print("pruning is off: Optuna cannot prune multi-objective trials")
        if self.settings.stage == "confirm":
            self.console.print("confirmation: the search's best configurations and their matched baselines, "
                               "re-trained with fresh seeds and judged on the test set")
        trials = self.current_trials()
        remaining = self.settings.n_trials - self.trials_taken(trials)
        if remaining <= 0:
            counts = outcome_counts(self.study, trials)
            running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
            self.console.print(
                f"study {self.settings.optuna_study!r} already holds {sum(counts.values()) + running} trials "
                f"({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed, "
                f"{running} running), as many as --trials {self.settings.n_trials}: nothing new to run")
            return self.study
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, transient=True,
        ) as progress:
            task = progress.add_task(self.settings.optuna_study, total=self.settings.n_trials,
                                     completed=self.settings.n_trials - remaining)
            self.progress = progress

            def report(study, trial):
                if trial.user_attrs.get(SURPLUS):
                    return
                # One read of the study per trial; only workers sharing it can leave dead trials behind meanwhile.
                trials = self.current_trials() if self.shares_study else study.get_trials(deepcopy=False)
                counted = counted_trials(study, trials)
                progress.update(task, completed=len(counted))
                best = best_value(trials)
                progress.console.print(self._trial_line(trial, best), soft_wrap=True, highlight=False, markup=False)
                if best is not None and self.settings.stage == "search":
                    self.tracker.log_best_so_far(self.parent_run_id, best, len(counted), trial.number)
                # Other workers' trials in flight count too: the study stops at n_trials, not n_trials x workers.
                if self.trials_taken(trials) >= self.settings.n_trials or self.interrupted or self.budget_spent(counted):
                    study.stop()

            def interrupt():
                self.interrupted = True
                progress.console.print("stopping: the trial in flight ends at its next batch (Ctrl-C again to stop at once)")

            with deferred_interrupts(interrupt):
                self.study.optimize(
                    self._objective, n_trials=remaining, timeout=self.settings.timeout,
                    catch=(Exception,), callbacks=[report],
                )
            self.progress = None
            if self.interrupted:
                raise KeyboardInterrupt
            if self.tracking_lost:
                raise self.tracking_lost
        return self.study

    def start_parent(self):
        """Create the MLflow parent run that this invocation's trials (or its workers') nest under."""
        return self.tracker.start_parent(
            self.settings.study_name,
            {
                "space": self.space.source,
                "dataset": self.space.dataset.name,
                "sampler": self.settings.sampler,
                "pruner": self.settings.pruner,
                "workers": str(self.settings.workers),
                "optuna_storage": redact(self.settings.storage),
            },
        )

    @property
    def shares_study(self):
        """Whether other processes ask for this study's trials too: workers join a parent run started elsewhere."""
        return self.settings.parent_run_id is not None

    def budget_spent(self, counted):
        """Whether the `counted` trials have trained the epoch budget (each epoch reports one intermediate value)."""
        budget = self.settings.epoch_budget
        return budget is not None and sum(len(t.intermediate_values) for t in counted) >= budget

    def current_trials(self):
        """The study's trials, read after failing those whose worker died."""
        self.fail_dead_trials()
        return self.study.get_trials(deepcopy=False)

    def trials_taken(self, trials):
        """Of `trials` (the study's, just read), those that count toward n_trials: finished ones and those still running."""
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        return len(counted_trials(self.study, trials)) + len(running)

    def fail_dead_trials(self):
        """Mark FAIL the RUNNING trials whose worker is gone: on this host at once, elsewhere by heartbeat."""
        host = socket.gethostname()
        for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if trial.user_attrs.get("host") == host and not process_alive(trial.user_attrs.get("pid", 0)):
                with contextlib.suppress(ValueError, RuntimeError):  # another worker got there first
                    self.study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                    self.tracker.close_run_of_stale_trial(self.study, trial)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    def _objective(self, trial):
        if self._is_surplus(trial):
            trial.set_user_attr(SURPLUS, True)
            self.study.stop()
            raise StudyFull(f"the study already had its {self.settings.n_trials} trials when this one was asked for")
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        params = {"seed": self.space.training.seed, **self._params(trial)}
        if self.space.is_multi_objective:
            pruning = []  # Optuna takes no intermediate values from multi-objective trials
        elif self.settings.stage == "search" and not trial.user_attrs.get(BENCHMARK_RUN):
            pruning = [KerasPruningCallback(trial, "val_accuracy")]
        else:
            pruning = [ReportEpochs(trial)]  # the baseline and seeded runs always train to the end
        try:
            result = self.train_logged(trial.number, params, self.space.training.epochs, pruning, trial.set_user_attr)
        except TrackingUnreachable as error:  # no run to log this trial to: stop rather than fail trial after trial
            self.tracking_lost = error
            self.study.stop()
            raise
        return (result.best_val_accuracy, *(getattr(result, COST_OBJECTIVES[o]) for o in self.space.objectives[1:]))

    def train_logged(self, number, params, epochs, callbacks=(), remember=lambda key, value: None):
        """Train one trial's params and log it as a child MLflow run; return its `TrialResult`.

        The engine-neutral body of a trial: `remember(key, value)` keeps the
        run id, costs and outcome with the engine's own trial record. Raises
        optuna.TrialPruned (impossible params, or pruned), TrialDiverged, or the
        trial's own exception, each after closing the run with its reason.
        """
        run_params = {"dataset": self.space.dataset.name, "epochs": epochs, **split_params(params)[1],
                      "precision": "mixed_float16" if self.settings.mixed_precision else "float32"}
        run_id = self.tracker.start_trial(self.parent_run_id, self.settings.study_name, number, params, run_params,
                                          self.settings.stage, self.dataset)
        remember("mlflow_run_id", run_id)

        def end(state, reason=None):
            remember(OUTCOME, state)
            if reason:
                remember("failure_reason", reason)
            self.tracker.end_trial(run_id, state, reason)

        try:
            try:
                check_params(split_params(params)[0])
            except ValueError as error:
                raise optuna.TrialPruned(f"invalid combination: {error}") from None
            in_flight = TrialProgress(self.console, f"{self.settings.stage} #{number}", epochs, self.progress)
            callbacks = [self.tracker.epoch_logger(run_id), StopOnRequest(lambda: self.interrupted), in_flight, *callbacks]
            result = run_trial(params, self.dataset, epochs=epochs, callbacks=callbacks)
            if self.interrupted:
                raise KeyboardInterrupt
            # The rest of the result lives in the MLflow run; each Optuna attribute is a storage write.
            for name in ("test_accuracy", "flops"):
                remember(name, getattr(result, name))
            self.tracker.log_result(run_id, result, save_model=self._keeps_model(result))
            if result.diverged:
                raise TrialDiverged(result.failure_reason)
        except optuna.TrialPruned as pruned:
            end("PRUNED", str(pruned) or "pruned: validation accuracy below the pruner's threshold")
            raise
        except Exception as error:
            end("FAIL", str(error) if isinstance(error, TrialDiverged) else f"{type(error).__name__}: {error}")
            raise
        except BaseException:
            self.tracker.end_trial(run_id, "FAIL", "interrupted (Ctrl-C)", status="KILLED")
            raise
        end("COMPLETE")
        return result

    def _keeps_model(self, result):
        """Whether a trial saves its model: every seeded run does; a search trial as `save_models` says,
        by default when it beats every trial this process has saved."""
        if self.settings.stage != "search" or self.settings.save_models == "all":
            return True
        accuracy = result.best_val_accuracy
        if self.settings.save_models == "none" or accuracy is None or accuracy <= self.best_saved:
            return False
        self.best_saved = accuracy
        return True

    def _is_surplus(self, trial):
        """Whether `trial` comes after the study was full: seeded stages run only their queued runs, and
        workers sharing a study can each pass the stop check before any of them asks (the earliest numbers win)."""
        if self.settings.stage != "search":
            return not trial.user_attrs.get(BENCHMARK_RUN)
        if not self.shares_study:
            return False
        before = [t for t in self.study.get_trials(deepcopy=False)
                  if t.number < trial.number and not t.user_attrs.get(SURPLUS)]
        return self.trials_taken(before) >= self.settings.n_trials

    def _params(self, trial):
        """An enqueued run's params, else a sample from the space."""
        if trial.user_attrs.get(BENCHMARK_RUN):
            return enqueued_params(trial)
        return self.space.sample(trial)

    def _trial_line(self, trial, best):
        """One line for a finished trial; `best` is the study's best validation accuracy so far, or None."""
        state = trial.user_attrs.get(OUTCOME) or trial.state.name
        flops = trial.user_attrs.get("flops")
        cost = f"{flops / 1e6:6.2f} MFLOPs" if flops else "      -      "
        if self.settings.stage != "search":  # seeded runs are judged on the test set
            test = trial.user_attrs.get("test_accuracy")
            accuracy, best = (f"test acc {test:.3f}" if test is not None else "test acc   -  "), ""
        else:
            accuracy = f"val acc {trial.values[0]:.3f}" if trial.values else "val acc   -  "
            best = "best   -  " if best is None else f"best {best:.3f}"
        shown = trial.params or enqueued_params(trial)
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
        reason = f" [{trial.user_attrs['failure_reason'][:80]}]" if "failure_reason" in trial.user_attrs else ""
        return f"#{trial.number:<3} {state:<8} {accuracy}  {cost}  {best}  {params}{reason}"

    def where(self):
        """Lines telling a user where the results are."""
        return [
            f"Optuna storage: {redact(self.settings.storage)} (study {self.settings.study_name!r})",
            f"MLflow store:   {redact(self.settings.tracking_uri)} (experiment {self.settings.study_name!r})",
            f"Browse runs:    harness ui --tracking-uri '{redact(self.settings.tracking_uri)}'",
        ]
