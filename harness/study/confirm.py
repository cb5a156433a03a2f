"""Seeded runs of fixed configurations, judged on the test set: benchmarks, and a search's confirmation.

Each (configuration, seed) is an enqueued Optuna trial whose user attributes
carry its params, so it is logged to MLflow, read by `harness report` like any
trial, and a killed run resumes where it stopped. Every configuration comes
with its matched baseline: the plain CNN with the same width, learning rate,
batch size, epochs and seeds, so `report.paired_comparisons` compares like with like.

Confirmation answers the winner's curse. A search ranks its trials on a small
validation set with one seed each, so its best figures are biased upward; the
top K distinct configurations are re-trained with seeds the search did not
use, in a study of their own (`<study>-confirm`) under the same MLflow
experiment and parent run.
"""

import dataclasses
import itertools
import math
import sys
import time

import optuna

from harness.params import BASELINE_DEFAULTS
from harness.redaction import redact
from harness.study.search import BENCHMARK_RUN, SURPLUS, Search, counted_trials, enqueued_key, trial_params, unfilled_line
from harness.study.storage import open_storage

MAX_GRID = 100


def matched_baseline(configuration):
    """The plain CNN trained like `configuration`: the same width, learning rate and batch size."""
    return {"insertion": "none", **{k: configuration[k] for k in BASELINE_DEFAULTS if k in configuration}}


def with_baselines(configurations):
    """The configurations' matched baselines, then the configurations, without seeds or duplicates."""
    unique = {}
    for configuration in [*map(matched_baseline, configurations), *configurations]:
        params = {k: v for k, v in configuration.items() if k != "seed"}
        unique.setdefault(tuple(sorted(params.items())), params)
    return list(unique.values())


def configurations(space, from_study=None, storage=None, top=5):
    """The configurations to benchmark, with their matched baselines.

    From `from_study`'s top `top` completed trials if given, else the space's
    `configurations` list, else every point of its grid. The space's fixed
    params fill in what a configuration leaves out.
    """
    if from_study:
        try:
            study = optuna.load_study(study_name=from_study, storage=open_storage(storage))
        except KeyError:
            raise ValueError(f"--from-study {from_study}: no such study in {redact(storage)}") from None
        chosen = top_configurations(study, space, top)
        if not chosen:
            raise ValueError(f"--from-study {from_study}: the study has no completed expanded configuration to benchmark")
    elif space.configurations:
        chosen = space.configurations
    else:
        grid = space.grid()
        size = math.prod(len(values) for values in grid.values())
        if size > MAX_GRID:
            raise ValueError(f"{space.source}: its grid holds {size} configurations (more than {MAX_GRID}); "
                             "list them under `configurations:` or use --from-study")
        chosen = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    return with_baselines([space.complete(c) for c in chosen])


def top_configurations(study, space, k):
    """The `k` best distinct expanded configurations of a search study, by validation accuracy, without seeds."""
    ranked = sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                    key=lambda t: t.values[0], reverse=True)
    chosen = {}
    for trial in ranked:
        params = {k: v for k, v in trial_params(trial, space).items() if k != "seed"}
        if params.get("insertion", "none") != "none":
            chosen.setdefault(tuple(sorted(params.items())), params)
        if len(chosen) == k:
            break
    return list(chosen.values())


def enqueue(study, configurations, seeds):
    """Queue every (configuration, seed) the study does not hold yet (waiting, running, or ended by its own doing);
    return how many runs the study then holds.

    Two processes queueing at the same moment can still queue a run twice: the later trial stands down when it
    starts (`search.earlier_twin`), so each run trains once.
    """
    trials = study.get_trials(deepcopy=False)
    counted = {t.number for t in counted_trials(study, trials)}
    live = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)
    held = {
        enqueued_key(t) for t in trials
        if t.user_attrs.get(BENCHMARK_RUN) and not t.user_attrs.get(SURPLUS) and (t.state in live or t.number in counted)
    }
    for configuration, seed in itertools.product(configurations, seeds):
        attrs = {**configuration, "seed": seed}
        key = tuple(sorted(attrs.items()))
        if key not in held:
            study.enqueue_trial({}, user_attrs={**attrs, BENCHMARK_RUN: True})
            held.add(key)
    return len(held)


def run_benchmark(space, settings, seeds, from_study=None, top=5, console=None):
    """Run (or resume) the benchmark study; return it."""
    chosen = configurations(space, from_study, settings.storage, top)
    settings = dataclasses.replace(settings, stage="benchmark")
    search = Search(space, settings, console=console)
    search.close_what_dead_processes_left()  # a run whose process died is queued again, not held
    settings.n_trials = enqueue(search.study, chosen, seeds)
    search.study.set_user_attr("seeds", list(seeds))
    with search.parent_run():
        return search.run()


def confirmation_seeds(space, count):
    """`count` seeds the search did not train with, so a winner's lucky seed does not carry over."""
    return [space.training.seed + 1 + i for i in range(count)]


def confirmation(search, top, seeds):
    """The confirm stage of `search`: a `Search` of `<study>-confirm` with its runs queued, or None if no
    expanded configuration completed. Its trials nest under `search`'s parent run."""
    chosen = top_configurations(search.study, search.space, top)
    if not chosen:
        return None
    settings = dataclasses.replace(search.settings, stage="confirm", sampler="random", pruner="none", timeout=None,
                                   epoch_budget=None, parent_run_id=search.parent_run_id)
    confirm = Search(search.space, settings, search.console, search.dataset)
    confirm.close_what_dead_processes_left()  # a run whose process died is queued again, not held
    settings.n_trials = enqueue(confirm.study, with_baselines(chosen), seeds)
    confirm.study.set_user_attr("seeds", list(seeds))
    return confirm


def search_and_confirm(search, top, seeds, pool=None):
    """The default journey, under one MLflow parent run: the baseline queued, the search run, then its `top`
    best expanded configurations re-trained with `seeds` fresh seeds beside their matched baselines.

    Each stage runs in `pool`'s worker processes if given, else here. Returns
    (exit code, the confirmation's `Search` or None): 0 when each stage ended as asked (`unfilled_line`), else 1,
    and the parent run then ends FAILED.
    """
    def run(stage):
        started = time.monotonic()
        pool.run(stage) if pool is not None else stage.run()
        unfilled = unfilled_line(stage, time.monotonic() - started)
        if unfilled is None:
            return 0
        print(f"harness: {unfilled}", file=sys.stderr)
        search.lifecycle.parent_status = "FAILED"
        return 1

    with search.parent_run():
        search.queue_baseline()
        code = run(search)
        confirm = confirmation(search, top, confirmation_seeds(search.space, seeds)) if top else None
        if top and confirm is None:
            search.console.print("nothing to confirm: no expanded configuration completed")
        if confirm is not None:
            code = max(code, run(confirm))
    return code, confirm
