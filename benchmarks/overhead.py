"""The harness's overhead per trial, measured two ways against the Keras work inside it.

Runs a search of 1-epoch trials on the quick space (no pruning) in-process and
compares the study's wall time with
- the time inside `model.fit` and `model.evaluate`: everything else is overhead,
  building the model included;
- that plus building the model: the same work a plain Keras script does for one
  configuration, so the rest is what the harness adds (FLOP counting, latency
  timing, MLflow logging and artifacts, plots, Optuna's bookkeeping).
The parts that can be wrapped are timed separately. Target: at most 5% and under 0.3 s a trial.

    python benchmarks/overhead.py [--trials 10]
"""

import argparse
import collections
import functools
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(owner, name, totals):
    """Wrap owner.name so that its calls add their seconds to totals[name]."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    os.environ["HARNESS_HOME"] = tempfile.mkdtemp(prefix="harness-overhead-")

    import optuna
    from rich.console import Console

    from harness.study import callbacks, lifecycle, search, settings as stage_settings, tracking
    from harness.study.space import load_space
    from harness.training import costs, trial as train

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    totals = collections.Counter()
    rdb = optuna.storages.RDBStorage
    for owner, name in (
        (costs, "count_flops"),
        (costs, "latency_per_sample"),
        (tracking.Tracker, "log_result"),
        (tracking.Tracker, "start_trial"),
        (tracking.Tracker, "end_trial"),
        (train, "build_model"),
        (tracking.Tracker, "log_best_so_far"),
        (callbacks.EpochLogger, "on_epoch_end"),
        (rdb, "set_trial_param"),
        (rdb, "set_trial_user_attr"),
        (rdb, "create_new_trial"),
        (rdb, "set_trial_state_values"),
        (rdb, "get_all_trials"),
    ):
        timed(owner, name, totals)
    keras_seconds = []  # time inside Keras fit and evaluate, per trial
    plain_run_trial = lifecycle.run_trial

    def run_trial(*args, **kwargs):
        result = plain_run_trial(*args, **kwargs)
        keras_seconds.append(result.train_seconds + result.evaluate_seconds)
        return result

    lifecycle.run_trial = run_trial

    space = load_space(ROOT / "search_spaces" / "quick.yaml")
    space.training.epochs = 1
    # The same seeded sample twice in one process: the first pass measures every architecture for the first
    # time (cold), the second finds FLOPs, latency, summaries and series plots cached, as a long study does.
    for label in ("cold: every architecture new to the process", "warm: architectures seen before"):
        totals.clear()
        keras_seconds.clear()
        settings = stage_settings.SearchSettings(
            study_name=f"overhead-{label[:4]}", n_trials=args.trials, sampler="random", pruner="none", seed=0
        )
        runner = search.Search(space, settings, console=Console(quiet=True))
        start = time.perf_counter()
        with runner.parent_run():
            runner.run()
        wall = time.perf_counter() - start
        report(label, len(keras_seconds), wall, sum(keras_seconds), totals)


def report(label, trials, wall, keras_seconds, totals):
    print(
        f"{label}: {trials} one-epoch trials of quick.yaml in {wall:.1f} s; Keras fit + evaluate {keras_seconds:.1f} s"
    )
    outside_fit = wall - keras_seconds
    added = outside_fit - totals["build_model"]
    for what, seconds in (
        ("outside fit and evaluate", outside_fit),
        ("added to plain Keras (build, fit, evaluate)", added),
    ):
        print(
            f"overhead {what}: {seconds / wall:.1%} of wall time, {seconds / trials:.3f} s per trial "
            f"(target: at most 5% and under 0.3 s)"
        )
    print("where it goes, seconds per trial:")
    for name, seconds in totals.most_common():
        print(f"  {name:<24} {seconds / trials:6.3f}")
    accounted = sum(totals.values())
    print(f"  {'everything else':<24} {(outside_fit - accounted) / trials:6.3f}  (sampling, callbacks, progress)\n")


if __name__ == "__main__":
    main()
