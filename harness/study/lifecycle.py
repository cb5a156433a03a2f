"""One trial's lifecycle, the same for every engine (Optuna search, keras-tuner, benchmark, confirmation).

An MLflow run is started under the engine's parent run, the model trains through
`run_trial`, its results are logged, and the run ends with the trial's outcome
and reason. The engine keeps its own record through a `remember(key, value)`
callable; the lifecycle does not know which engine called it.
"""

import contextlib

import keras
import optuna

from harness.model import ModelError, load_backbone, surgery_plan
from harness.params import AFTER, BASELINE_DEFAULTS
from harness.study.callbacks import EpochLogger, StopOnRequest, TrialProgress
from harness.statistics import untrained, untrained_reason
from harness.study.records import OUTCOME, UNTRAINED
from harness.study.tracking import UNTRAINED_TAG, Tracker
from harness.training import data
from harness.training.optimizers import NormLog
from harness.training.trial import run_trial, split_params


class TrialDiverged(RuntimeError):
    """Training produced a non-finite loss."""


def failure_reason(error):
    """What a trial's run records as the reason it failed with `error`."""
    if isinstance(error, TrialDiverged):
        return str(error)
    if isinstance(error, optuna.exceptions.UpdateFinishedTrialError):
        return (
            "another worker marked this trial FAIL while it ran: its heartbeat came later than the grace period "
            "(a larger --heartbeat avoids this on a busy machine)"
        )
    return f"{type(error).__name__}: {error}"


class TrialLifecycle:
    """Trains trials on `dataset` and logs each as a child run of `parent_run_id` through `tracker`.

    `stage` (search, confirm, benchmark) tags the runs; `save_models` says which search trials save their model
    ("best": each that beats every one saved so far; seeded runs always do); `log_norms` logs variables' norms.
    Setting `interrupted` ends the trial in flight at its next batch; `progress` is the study's rich bar, if any.
    """

    def __init__(self, tracker, dataset, experiment, console, *, settings=None):
        """`settings` (a `SearchSettings`) gives the stage, the models to save, the precision, whether each seed
        redraws the split and whether norms are logged; a search's defaults without it."""
        self.tracker, self.dataset, self.experiment, self.console = tracker, dataset, experiment, console
        self.stage, self.save_models = (settings.stage, settings.save_models) if settings else ("search", "best")
        self.mixed_precision, self.vary_split, self.log_norms = (
            bool(settings and getattr(settings, flag)) for flag in ("mixed_precision", "vary_split", "log_norms")
        )
        self.parent_run_id = None
        self.parent_status = "FINISHED"  # how a parent run started here ends if nothing goes wrong
        self.interrupted = False
        self.progress = None
        self.best_saved = float("-inf")  # the best validation accuracy whose model this process saved

    @contextlib.contextmanager
    def parent_run(self, tags):
        """The MLflow run the trials nest under: joined if `parent_run_id` is set, else started with `tags` and
        ended here, FAILED on an exception and KILLED on Ctrl-C."""
        if self.parent_run_id is not None:
            yield self.parent_run_id
            return
        self.parent_run_id = self.tracker.start_parent(self.experiment, tags)
        status = "KILLED"
        try:
            yield self.parent_run_id
            status = self.parent_status
        except Exception:
            status = "FAILED"
            raise
        finally:
            self.tracker.end_parent(self.parent_run_id, status)

    def run(self, number, params, epochs, callbacks=(), remember=lambda key, value: None, label=None):
        """Train trial `number`'s params and log it as a child MLflow run; return its `TrialResult`.

        `remember(key, value)` keeps the run id, costs, outcome and any untrained flag with the engine's own trial
        record; `label` says in the console what runs ("search trial 7", "matched baseline, seed 2/5"). Raises
        optuna.TrialPruned (impossible params, or pruned), TrialDiverged, or the trial's own exception, each after
        closing the run with its reason.
        """
        dataset = data.redrawn_split(self.dataset, params.get("seed", 0)) if self.vary_split else self.dataset
        run_id = self._start_run(number, params, epochs, dataset, remember)
        in_flight = TrialProgress(self.console, label or f"{self.stage} #{number}", epochs, self.progress)
        try:
            remember("mlflow_run_id", run_id)
            if self.vary_split:
                remember("vary_split", True)
            log = self.tracker.metrics_logger(run_id)
            callbacks = [
                EpochLogger(log),
                StopOnRequest(lambda: self.interrupted),
                in_flight,
                *([NormLog(log)] if self.log_norms else []),  # "norm/gradient/<variable>", "norm/value/<variable>"
                *callbacks,
            ]
            result = self._train_and_log(run_id, params, epochs, dataset, callbacks, remember)
        except optuna.TrialPruned as pruned:
            self._end_run(run_id, remember, "PRUNED", pruned_reason(pruned, in_flight.epochs_done, epochs))
            raise
        except Exception as error:
            self._end_run(run_id, remember, "FAIL", failure_reason(error))
            raise
        except BaseException:
            self.tracker.end_trial(run_id, "FAIL", "interrupted (Ctrl-C)", status="KILLED")
            raise
        self._end_run(run_id, remember, "COMPLETE")
        return result

    def _start_run(self, number, params, epochs, dataset, remember):
        """The trial's MLflow run, started under the parent run with what it trains on; a run that cannot start
        (a locked or unreachable store) has nowhere to record why, so the engine's record does."""
        logged = run_params(params, epochs, self.dataset.name, self.mixed_precision, self.vary_split)
        try:
            return self.tracker.start_trial(
                self.parent_run_id, self.experiment, number, params, logged, stage=self.stage, dataset=dataset
            )
        except Exception as error:
            remember("failure_reason", f"its MLflow run could not start: {failure_reason(error)}")
            raise

    def _train_and_log(self, run_id, params, epochs, dataset, callbacks, remember):
        """Train, log the result to the run, and raise if the trial must not end COMPLETE."""
        try:  # the model is built, and its params checked, before any training
            result = run_trial(params, dataset, epochs=epochs, callbacks=callbacks)
        except ModelError as error:
            raise optuna.TrialPruned(f"invalid combination: {error}") from None
        if self.interrupted:
            raise KeyboardInterrupt
        # The rest of the result lives in the MLflow run; each remembered value can be a storage write.
        for name in ("test_accuracy", "flops"):
            remember(name, getattr(result, name))
        self.tracker.log_result(run_id, result, save_model=self._keeps_model(result))
        if result.diverged:
            raise TrialDiverged(result.failure_reason)
        flag_if_untrained(self.tracker, run_id, result, self.dataset.num_classes, self.stage, remember)
        return result

    def _end_run(self, run_id, remember, state, reason=None):
        # The run closes first: it must not stay RUNNING if the engine's record no longer takes writes.
        self.tracker.end_trial(run_id, state, reason)
        remember(OUTCOME, state)
        if reason:
            remember("failure_reason", reason)

    def _keeps_model(self, result):
        if self.stage != "search" or self.save_models == "all":
            return True
        accuracy = result.best_val_accuracy
        if self.save_models == "none" or accuracy is None or accuracy <= self.best_saved:
            return False
        self.best_saved = accuracy
        return True


def run_params(params, epochs, dataset_name, mixed_precision, vary_split):
    """What a trial's MLflow run logs beside its params: the data, epochs, network, training recipe and precision."""
    return {
        "dataset": dataset_name,
        "epochs": epochs,
        **{key: params.get(key, BASELINE_DEFAULTS[key]) for key in ("backbone", "width")},
        **split_params(params)[1],
        "precision": "mixed_float16" if mixed_precision else "float32",
        "backend": keras.backend.backend(),
        "vary_split": vary_split,
    }


def pruned_reason(pruned, epochs_done, epochs):
    """A pruned trial's reason, counting epochs as its progress lines do (optuna-integration's counts from 0)."""
    if str(pruned) and not str(pruned).startswith("Trial was pruned"):
        return str(pruned)  # not the pruner's: an invalid combination
    return f"pruned after epoch {epochs_done} of {epochs}: validation accuracy below the pruner's threshold"


def flag_if_untrained(tracker, run_id, result, num_classes, stage, remember):
    """Tag a run whose judged accuracy (test for seeded runs, validation for search trials) is near chance
    (`statistics.untrained`), and `remember` why."""
    measured, accuracy = (
        ("validation accuracy", result.best_val_accuracy)
        if stage == "search"
        else ("test accuracy", result.test_accuracy)
    )
    if accuracy is not None and untrained(accuracy, num_classes):
        reason = untrained_reason(accuracy, num_classes, measured)
        tracker.tag(run_id, UNTRAINED_TAG, reason)
        remember(UNTRAINED, reason)


def check_networks(space, dataset):
    """Raise `ModelError` before any training if a network the space names cannot be built for `dataset`, or if an
    "after:" insertion matches no layer of any of them."""
    backbones = space.choices("backbone") or [BASELINE_DEFAULTS["backbone"]]
    patterns = [i for i in space.choices("insertion") if str(i).startswith(AFTER)]
    unmatched = set(patterns)
    for backbone in backbones:
        model = load_backbone(backbone, dataset.input_shape, dataset.num_classes)
        for pattern in patterns:
            try:
                surgery_plan(model, backbone, pattern)
                unmatched.discard(pattern)
            except ModelError:
                pass
    if unmatched:
        raise ModelError(f"insertion {sorted(unmatched)[0]!r} matches no layer of {', '.join(backbones)}")


def open_lifecycle(space, settings, console, dataset=None):
    """A `TrialLifecycle` for `settings`' study: the space's dataset (unless given) loaded and its networks
    checked, its MLflow experiment opened."""
    if dataset is None:  # a dataset handed over comes from a stage of the same space, whose networks were checked
        dataset = data.load(
            space.dataset.name,
            data_dir=space.dataset.data_dir,
            train_size=space.dataset.train_size,
            val_size=space.dataset.val_size,
            test_size=space.dataset.test_size,
            seed=space.training.seed,
        )
        check_networks(space, dataset)
    tracker = Tracker(
        settings.tracking_uri,
        settings.study_name,
        say=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True),
    )
    lifecycle = TrialLifecycle(tracker, dataset, settings.study_name, console, settings=settings)
    lifecycle.parent_run_id = settings.parent_run_id
    return lifecycle
