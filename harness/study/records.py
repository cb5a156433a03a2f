"""What a trial's Optuna record holds: the user-attribute keys every stage writes, and the params an enqueued run
carries.

Plain names and small functions over Optuna's trials, with no Keras: a report reads a study through them without
loading TensorFlow.
"""

import optuna

from harness.params import PARAM_KEYS

OUTCOME = "outcome"  # what a trial that ended by its own doing remembers; its absence means its process died
BENCHMARK_RUN = (
    "benchmark"  # user attr of an enqueued run (baseline, confirmation, benchmark), whose other attrs are its params
)
BASELINE = "baseline"  # user attr of the search's enqueued baseline trial
TUNED_BASELINE = "tuned_baseline"  # a confirmation study's attr: the search's best baseline's params, without seed
PILOT = (
    "pilot"  # user attr of an enqueued run of a pilot, which sizes a seeded stage (`--seeds auto`) and is not tested
)
BASELINE_TURN = (
    "baseline_turn"  # user attr of a sampled trial that tunes the baseline (`SearchSettings.baseline_every`)
)
SURPLUS = "surplus"  # user attr of a trial that never trains: asked for once the study was full, or a duplicate
UNTRAINED = "untrained"  # user attr of a run that completed near chance (`statistics.untrained`): its words
DUPLICATE_OF = "duplicate_of"  # user attr of an enqueued run that stood down: the number of its twin, queued before it
# search: sampled trials, judged on validation. confirm and benchmark: fixed configurations with seeds, judged on test.
STAGES = ("search", "confirm", "benchmark")
CONFIRM_SUFFIX = "-confirm"  # the Optuna study holding a search's confirmation runs


def enqueued_params(trial):
    """The params an enqueued run (baseline, confirmation, benchmark) carries in its user attributes; {} otherwise."""
    if not trial.user_attrs.get(BENCHMARK_RUN):
        return {}
    return {k: trial.user_attrs[k] for k in PARAM_KEYS if k in trial.user_attrs}


def configuration_key(params):
    """What makes a configuration, as a hashable key: its params but the seed, which repeats it."""
    return tuple(sorted((k, v) for k, v in params.items() if k != "seed"))


def enqueued_key(trial):
    """What makes two enqueued runs the same run: their params and seed."""
    return tuple(sorted(enqueued_params(trial).items()))


def counted_trials(study, trials=None):
    """Trials that ended by their own doing: complete, pruned, or failed with a recorded reason.

    `trials` is the study's trials when the caller has just read them.
    """
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    return [t for t in trials if OUTCOME in t.user_attrs and t.state.is_finished()]


def best_value(trials):
    """The best first objective (validation accuracy) among complete `trials`, or None."""
    values = [t.values[0] for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return max(values) if values else None


def trials_taken(study, trials):
    """Of `trials` (the study's, just read), those that count toward n_trials: finished ones and those still running."""
    running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    return len(counted_trials(study, trials)) + len(running)
