"""The keras-tuner engine: the same YAML space and the same logged trials, searched by a keras-tuner tuner.

The space is defined once: `Space.sample` asks Optuna-style `suggest_*`
questions, which `HyperParameterTrial` answers with keras-tuner's
`HyperParameters`. Each trial trains and logs through `TrialLifecycle.run`,
so its MLflow run has the same params, metrics, tags and artifacts as an
Optuna trial's, and `harness report` reads it. The tuner keeps its state in a
folder named for the study, so running the same study again resumes it.
"""

import contextlib
import sys
import tempfile

import keras_tuner as kt
import optuna

from harness.params import check_choice
from harness.study.lifecycle import TrialDiverged
from harness.study.records import OUTCOME

TUNERS = {"random": kt.RandomSearch, "bayesian": kt.BayesianOptimization, "hyperband": kt.Hyperband}


class HyperParameterTrial:
    """Optuna's suggest_* calls answered by keras-tuner's HyperParameters."""

    def __init__(self, hp):
        self.hp = hp

    def suggest_categorical(self, name, choices):
        value = self.hp.Choice(name, choices)
        return next(choice for choice in choices if choice == value)  # keras-tuner hands back True as 1

    def suggest_int(self, name, low, high, step=1, log=False):
        return self.hp.Int(name, low, high, step=step, sampling="log" if log else "linear")

    def suggest_float(self, name, low, high, step=None, log=False):
        return self.hp.Float(name, low, high, step=step, sampling="log" if log else "linear")


BUDGET_SPENT = "epoch budget spent"


class LoggedTrials:
    """Mixed into a keras-tuner tuner: each trial's params sampled from `space` and trained through `lifecycle`
    (its MLflow run, its outcome kept in `outcomes`), until `epoch_budget` epochs are spent."""

    def __init__(self, *, space, lifecycle, epoch_budget=None, **tuner_options):
        self.space, self.lifecycle, self.epoch_budget = space, lifecycle, epoch_budget
        self.outcomes, self.epochs_spent = {}, 0
        super().__init__(**tuner_options)

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        params = {"seed": self.space.training.seed, **self.space.sample(HyperParameterTrial(hp))}
        # Hyperband sets each trial's share of the epoch budget.
        epochs = hp.values.get("tuner/epochs", self.space.training.epochs)
        if self.epoch_budget is not None and self.epochs_spent >= self.epoch_budget:
            raise kt.errors.FatalError(BUDGET_SPENT)
        self.epochs_spent += epochs
        outcome = {}
        try:
            result = self.lifecycle.run(int(trial.trial_id), params, epochs, remember=outcome.__setitem__)
        except (optuna.TrialPruned, TrialDiverged) as error:
            raise kt.errors.FailedTrialError(str(error)) from None
        finally:  # how it ended, pruned and failed trials too (a crash before its run started: FAIL)
            self.outcomes[trial.trial_id] = outcome.get(OUTCOME, "FAIL")
        return {"val_accuracy": result.best_val_accuracy}


def make_tuner(kind, space, lifecycle, max_trials, directory, *, seed=None, epoch_budget=None):
    """A keras-tuner tuner of `kind` over `space` whose trials run through `lifecycle`, its state in
    `directory`/<study>: an earlier tuner's state there is resumed.

    With `epoch_budget`, the search ends once its trials have trained that many epochs.
    """
    check_choice("tuner", kind, TUNERS)

    def declare_space(hp):
        # keras-tuner learns the space by building once; run_trial does the real building and training.
        space.sample(HyperParameterTrial(hp))

    if kind == "hyperband":
        # Enough brackets to spend any epoch budget; the budget check ends the search.
        budget = {"max_epochs": space.training.epochs, "hyperband_iterations": 1 if epoch_budget is None else 1000}
    else:
        budget = {"max_trials": max_trials}
    # keras-tuner's tuner of that kind, with `LoggedTrials` training each of its trials through the lifecycle
    logged = type(f"Logged{TUNERS[kind].__name__}", (LoggedTrials, TUNERS[kind]), {})
    return logged(
        space=space,
        lifecycle=lifecycle,
        epoch_budget=epoch_budget,
        hypermodel=declare_space,
        objective=kt.Objective("val_accuracy", "max"),
        directory=str(directory),
        project_name=lifecycle.experiment,
        overwrite=False,
        seed=seed,
        max_consecutive_failed_trials=sys.maxsize,  # a failed or pruned trial is recorded with its reason; the search goes on
        **budget,
    )


def run_tuner(space, lifecycle, kind, max_trials, *, seed=None, epoch_budget=None, directory=None):
    """Run (or resume) a keras-tuner search of `space` under one MLflow parent run; return {trial id: outcome}
    for the trials this call ran.

    Its state lives in `directory` (kept, so the same study resumes), or in a
    temporary folder removed afterwards.
    """
    with lifecycle.parent_run({"space": space.source, "dataset": space.dataset.name, "engine": f"keras-tuner {kind}"}):
        with contextlib.ExitStack() as cleanup:
            if directory is None:
                directory = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="harness-kt-"))
            tuner = make_tuner(kind, space, lifecycle, max_trials, directory, seed=seed, epoch_budget=epoch_budget)
            try:
                tuner.search(verbose=0)
            except kt.errors.FatalError as error:
                if str(error) != BUDGET_SPENT:
                    raise
    return tuner.outcomes
