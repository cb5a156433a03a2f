"""Seeded runs of fixed configurations, judged on the test set: benchmarks, and a search's confirmation.

Each (configuration, seed) is an enqueued Optuna trial whose user attributes
carry its params, so it is logged to MLflow, read by `harness report` like any
trial, and a killed run resumes where it stopped. Every configuration comes
with its matched baseline: the plain network with the same backbone, width,
training recipe, epochs and seeds, so `report.paired_comparisons` compares like
with like. A confirmation also re-trains the search's tuned baseline: the plain
network with the hyperparameters its own trials found best, what a practitioner
would compare against.

Confirmation answers the winner's curse. A search ranks its trials on a small
validation set with one seed each, so its best figures are biased upward; the
top K distinct configurations are re-trained with seeds the search did not
use, in a study of their own (`<study>-confirm`) under the same MLflow
experiment and parent run.

How many seeds: a count, or `AutoSeeds` (`--seeds auto`), where a pilot
sizes the stage and only fresh seeds are tested (`run_seeded`).
"""

import dataclasses
import itertools
import math
import sys
import time

import numpy as np
import optuna

from harness.redaction import redact
from harness.study.baselines import matched_baseline, queue_baseline
from harness.statistics import PILOT_SEEDS, AutoSeeds, sized_seeds
from harness.study.records import (
    BENCHMARK_RUN,
    PILOT,
    SURPLUS,
    TUNED_BASELINE,
    configuration_key,
    counted_trials,
    enqueued_key,
    enqueued_params,
)
from harness.study.progress import unfilled_line
from harness.study.objective import trial_params
from harness.study.search import Search
from harness.study.storage import open_storage

MAX_GRID = 100


def with_baselines(configurations, tuned=None):
    """The configurations' matched baselines and the `tuned` baseline if given, then the configurations, without
    seeds or duplicates (a tuned baseline that is also a matched one is trained once)."""
    unique = {}
    baselines = [*map(matched_baseline, configurations), *([tuned] if tuned else [])]
    for configuration in [*baselines, *configurations]:
        unique.setdefault(configuration_key(configuration), {k: v for k, v in configuration.items() if k != "seed"})
    return list(unique.values())


def configurations(space, from_study=None, storage=None, *, top=5):
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
            raise ValueError(
                f"--from-study {from_study}: the study has no completed expanded configuration to benchmark"
            )
    elif space.configurations:
        chosen = space.configurations
    else:
        grid = space.grid()
        size = math.prod(len(values) for values in grid.values())
        if size > MAX_GRID:
            raise ValueError(
                f"{space.source}: its grid holds {size} configurations (more than {MAX_GRID}); "
                "list them under `configurations:` or use --from-study"
            )
        chosen = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    return with_baselines([space.complete(c) for c in chosen])


def ranked_configurations(study, space):
    """A search study's completed configurations without seeds, best validation accuracy first."""
    ranked = sorted(
        study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
        key=lambda t: t.values[0],
        reverse=True,
    )
    for trial in ranked:
        yield {k: v for k, v in trial_params(trial, space).items() if k != "seed"}


def top_configurations(study, space, k):
    """The `k` best distinct expanded configurations of a search study, by validation accuracy, without seeds."""
    chosen = {}
    for params in ranked_configurations(study, space):
        if params.get("insertion", "none") != "none":
            chosen.setdefault(configuration_key(params), params)
        if len(chosen) == k:
            break
    return list(chosen.values())


def tuned_baseline(study, space):
    """The best plain network of a search study (its baseline turns, its sampled `insertion: none` trials and its
    queued baseline), by validation accuracy, without seed; None if none completed."""
    return next((p for p in ranked_configurations(study, space) if p.get("insertion", "none") == "none"), None)


def enqueue(study, configurations, seeds, *, pilot=False):
    """Queue every (configuration, seed) the study does not hold yet (waiting, running, or ended by its own doing);
    return how many runs the study then holds. `pilot` marks runs that size a stage and are not tested.

    Two processes queueing at the same moment can still queue a run twice: the later trial stands down when it
    starts (`objective.earlier_twin`), so each run trains once.
    """
    trials = study.get_trials(deepcopy=False)
    counted = {t.number for t in counted_trials(study, trials)}
    live = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)
    held = {
        enqueued_key(t)
        for t in trials
        if t.user_attrs.get(BENCHMARK_RUN)
        and not t.user_attrs.get(SURPLUS)
        and (t.state in live or t.number in counted)
    }
    for configuration, seed in itertools.product(configurations, seeds):
        attrs = {**configuration, "seed": seed}
        key = tuple(sorted(attrs.items()))
        if key not in held:
            study.enqueue_trial({}, user_attrs={**attrs, BENCHMARK_RUN: True, **({PILOT: True} if pilot else {})})
            held.add(key)
    return len(held)


def run_seeded(stage, runs, seeds, first_seed, run):
    """Train each of `runs` (configurations and their baselines) with `seeds` seeds from `first_seed` on, a count or
    `AutoSeeds`, in `stage` through `run(stage)`; return the worst exit code `run` gave."""
    code = 0
    if isinstance(seeds, AutoSeeds):
        pilot = list(range(first_seed, first_seed + PILOT_SEEDS))
        stage.study.set_user_attr("pilot_seeds", pilot)
        stage.settings.n_trials = enqueue(stage.study, runs, pilot, pilot=True)
        code = run(stage)
        first_seed += PILOT_SEEDS
        seeds = sized_seeds(pilot_differences(stage.study, runs), seeds.rope, seeds.max_seeds)
        stage.console.print(
            f"{stage.settings.stage}: its pilot ({PILOT_SEEDS} seeds, not tested) sizes it at {seeds} fresh seeds",
            highlight=False,
        )
    tested = list(range(first_seed, first_seed + seeds))
    stage.study.set_user_attr("seeds", tested)
    stage.settings.n_trials = enqueue(stage.study, runs, tested)
    return max(code, run(stage))


def pilot_differences(study, runs):
    """The pilot's paired test-accuracy differences in points, one array per comparison: each expanded
    configuration of `runs` against its matched baseline, and against the study's tuned baseline if that is
    another network."""
    accuracy = {
        (configuration_key(enqueued_params(t)), t.user_attrs["seed"]): 100 * t.user_attrs["test_accuracy"]
        for t in counted_trials(study)
        if t.user_attrs.get(PILOT) and t.state == optuna.trial.TrialState.COMPLETE
    }
    tuned = study.user_attrs.get(TUNED_BASELINE)
    differences = []
    for configuration in (r for r in runs if r.get("insertion", "none") != "none"):
        own = configuration_key(configuration)
        for baseline in dict.fromkeys(configuration_key(b) for b in (matched_baseline(configuration), tuned) if b):
            seeds = sorted(s for k, s in accuracy if k == own and (baseline, s) in accuracy)
            differences.append(np.array([accuracy[own, s] - accuracy[baseline, s] for s in seeds]))
    return differences


def run_benchmark(space, settings, seeds, *, from_study=None, top=5, console=None, pool=None):
    """Run (or resume) the benchmark study with `seeds` seeds (a count, from 0, or `AutoSeeds`), in `pool` (a
    `RayPool`) if given, else here; return it."""
    chosen = configurations(space, from_study, settings.storage, top=top)
    settings = dataclasses.replace(settings, stage="benchmark")
    search = Search(space, settings, console=console)
    search.close_what_dead_processes_left()  # a run whose process died is queued again, not held

    def run(stage):
        pool.run(stage) if pool is not None else stage.run()
        return 0

    with search.parent_run():
        run_seeded(search, chosen, seeds, 0, run)
    return search.study


def confirmation(search, top):
    """The confirm stage of `search` and the runs it trains (the `top` best expanded configurations, their matched
    baselines and the tuned baseline), or None if no expanded configuration completed. Its trials nest under
    `search`'s parent run."""
    chosen = top_configurations(search.study, search.space, top)
    if not chosen:
        return None
    settings = dataclasses.replace(
        search.settings,
        stage="confirm",
        sampler="random",
        pruner="none",
        timeout=None,
        epoch_budget=None,
        parent_run_id=search.parent_run_id,
    )
    confirm = Search(search.space, settings, console=search.console, dataset=search.dataset)
    confirm.close_what_dead_processes_left()  # a run whose process died is queued again, not held
    tuned = tuned_baseline(search.study, search.space)
    confirm.study.set_user_attr(TUNED_BASELINE, tuned)
    return confirm, with_baselines(chosen, tuned)


def search_and_confirm(search, top, seeds, pool=None):
    """The default journey, under one MLflow parent run: the baseline queued, the search run, then its `top`
    best expanded configurations re-trained with `seeds` fresh seeds (a count or `AutoSeeds`; the search trained
    with none of them) beside their matched baselines and the tuned baseline.

    Each stage runs in `pool`'s worker processes if given, else here. Returns
    (exit code, the confirmation's `Search` or None): 0 when each stage ended as asked (`unfilled_line`), else 1,
    and the parent run then ends FAILED.

    >>> import tempfile
    >>> from rich.console import Console
    >>> from harness.study.settings import SearchSettings
    >>> from harness.study.space import find_space, load_space
    >>> home = tempfile.mkdtemp()
    >>> settings = SearchSettings("doc", n_trials=2, storage=f"sqlite:///{home}/optuna.db",
    ...                           tracking_uri=f"sqlite:///{home}/mlflow.db")
    >>> search = Search(load_space(find_space("search_spaces/quick.yaml")), settings, console=Console(quiet=True))
    >>> code, confirmation = search_and_confirm(search, top=0, seeds=2)  # the baseline, then one sampled trial
    >>> code, len(search.study.trials), search.study.trials[0].user_attrs["insertion"], confirmation
    (0, 2, 'none', None)
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
        queue_baseline(search.study, search.space)
        code = run(search)
        found = confirmation(search, top) if top else None
        if top and found is None:
            search.console.print("nothing to confirm: no expanded configuration completed")
        if found is not None:
            code = max(code, run_seeded(*found, seeds, search.space.training.seed + 1, run))
    return code, found and found[0]
