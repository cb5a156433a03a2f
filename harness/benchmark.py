"""Benchmarks: a fixed set of configurations, each trained with several seeds.

The runs go through the same study machinery as a search: each (configuration,
seed) is an enqueued Optuna trial whose user attributes carry its params, so
it is logged to MLflow and read by `harness report` like any trial. The
baseline (insertion none) is always among the configurations.
"""

import itertools
import math

import optuna

from harness.model import EXPANSION_KEYS
from harness.search import BENCHMARK_RUN, Search, counted_trials
from harness.space import PARAM_KEYS
from harness.storage import open_storage

MAX_GRID = 100


def configurations(space, from_study=None, storage=None, top=5):
    """The configurations to benchmark, baseline first.

    From `from_study`'s top `top` completed trials if given, else the space's
    `configurations` list, else every point of its grid. The space's fixed
    params fill in what a configuration leaves out.
    """
    if from_study:
        study = optuna.load_study(study_name=from_study, storage=open_storage(storage))
        best = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: -t.values[0])
        chosen = [t.params for t in best[:top]]
    elif space.configurations:
        chosen = space.configurations
    else:
        grid = space.grid()
        size = math.prod(len(values) for values in grid.values())
        if size > MAX_GRID:
            raise ValueError(f"{space.source}: its grid holds {size} configurations (more than {MAX_GRID}); "
                             "list them under `configurations:` or use --from-study")
        chosen = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    baseline = {"insertion": "none"}
    unique = {}
    for configuration in [baseline, *chosen]:
        params = {**space.fixed_params, **configuration}
        params.pop("seed", None)  # seeds are the benchmark's own
        if params.get("insertion", "none") == "none":
            params = {k: v for k, v in params.items() if k not in EXPANSION_KEYS}
        unique.setdefault(tuple(sorted(params.items())), params)
    return list(unique.values())


def enqueue(study, configurations, seeds):
    """Queue every (configuration, seed) the study has not run yet; return how many runs the benchmark holds."""
    counted = {t.number for t in counted_trials(study)}
    done = {
        tuple(sorted((k, v) for k, v in t.user_attrs.items() if k in PARAM_KEYS))
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get(BENCHMARK_RUN) and (t.state == optuna.trial.TrialState.WAITING or t.number in counted)
    }
    for configuration, seed in itertools.product(configurations, seeds):
        attrs = {**configuration, "seed": seed}
        if tuple(sorted(attrs.items())) not in done:
            study.enqueue_trial({}, user_attrs={**attrs, BENCHMARK_RUN: True})
    return len(configurations) * len(seeds)


def run_benchmark(space, settings, seeds, from_study=None, top=5, console=None):
    """Run (or resume) the benchmark study; return it."""
    chosen = configurations(space, from_study, settings.storage, top)
    search = Search(space, settings, console=console)
    settings.n_trials = enqueue(search.study, chosen, seeds)
    search.study.set_user_attr("benchmark_seeds", list(seeds))
    return search.run()
