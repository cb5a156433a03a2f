"""The plain network every comparison needs, in one place: the baseline a search queues first, the turns that
tune it over the hyperparameters it shares with the expanded networks, and a configuration's matched baseline.
(The tuned baseline is the best plain network of a search: `confirm.tuned_baseline` picks it.)"""

import optuna

from harness.params import BASELINE_DEFAULTS
from harness.study.records import BASELINE, BENCHMARK_RUN
from harness.study.specs import Range


def default_baseline(space):
    """The plain network under `space`'s training: fixed values as given, searched ones at their defaults.

    A searched backbone, width or training param takes its default where the
    space allows it, else the nearest value it does allow.
    """
    params = {"insertion": "none"}
    for name, default in BASELINE_DEFAULTS.items():
        if name not in space.params:
            continue  # the trial takes its default, as every trial of this space does
        dimension = space.params[name]
        if isinstance(dimension, list):
            params[name] = default if default in dimension else dimension[0]
        elif isinstance(dimension, Range):
            params[name] = type(dimension.low)(min(max(default, dimension.low), dimension.high))
        else:
            params[name] = dimension
    return params


def matched_baseline(configuration):
    """The plain network trained like `configuration`: the same backbone, width and training recipe."""
    return {"insertion": "none", **{k: configuration[k] for k in BASELINE_DEFAULTS if k in configuration}}


def searched_shared_keys(space):
    """The hyperparameters a baseline shares with an expanded network (backbone, width, the recipe) that `space`
    searches: more than one value to choose from."""
    return [
        name
        for name in BASELINE_DEFAULTS
        if isinstance(space.params.get(name), (list, Range))
        and not (isinstance(space.params[name], list) and len(set(map(repr, space.params[name]))) == 1)
    ]


def sample_baseline(space, trial):
    """Suggest a baseline's params from `trial`: no expansion, and only the hyperparameters it shares searched."""
    return {"insertion": "none", **{name: space.suggest(trial, name) for name in searched_shared_keys(space)}}


def takes_baseline_turns(space, settings):
    """Whether this stage gives the baseline turns: a search whose space searches a hyperparameter the baseline
    shares, with `baseline_every` set. The grid sampler gives none (a turn would use up a grid point)."""
    return (
        settings.stage == "search"
        and settings.sampler != "grid"
        and settings.baseline_every > 0
        and bool(searched_shared_keys(space))
    )


def is_baseline_turn(number, space, settings):
    """Whether sampled trial `number` tunes the baseline: every `baseline_every`th trial where
    `takes_baseline_turns`."""
    return takes_baseline_turns(space, settings) and number % settings.baseline_every == settings.baseline_every - 1


def queue_baseline(study, space):
    """Queue the default baseline as the study's next trial unless it holds one that waits, runs or completed.

    It trains with the space's fixed training params and is never pruned, so
    every search has its reference, and a resumed search does not train it twice.
    """
    kept = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE)
    if any(t.user_attrs.get(BASELINE) and t.state in kept for t in study.get_trials(deepcopy=False)):
        return
    params = {**default_baseline(space), "seed": space.training.seed}
    study.enqueue_trial({}, user_attrs={**params, BENCHMARK_RUN: True, BASELINE: True})
