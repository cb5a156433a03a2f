"""The harness's overhead: the share of each trial's wall time spent outside Keras fit and evaluate.

Runs a search of 1-epoch trials on the quick space (no pruning) in-process and
compares the study's wall time with the time inside `model.fit` and
`model.evaluate`. The rest is model building, FLOP counting, latency timing,
MLflow logging and artifacts, plots and Optuna's bookkeeping; the parts that
can be wrapped are timed separately. Target: at most 5% and under 0.3 s a trial.

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

    from harness import costs, search, train, tracking
    from harness.space import load_space

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    totals = collections.Counter()
    for owner, name in ((costs, "count_flops"), (costs, "latency_per_sample"), (tracking.Tracker, "log_result"),
                        (tracking.Tracker, "start_trial"), (tracking.Tracker, "end_trial"), (train, "build_model")):
        timed(owner, name, totals)
    keras_seconds = []  # time inside Keras fit and evaluate, per trial
    trial = search.run_trial

    def run_trial(*args, **kwargs):
        result = trial(*args, **kwargs)
        keras_seconds.append(result.train_seconds + result.evaluate_seconds)
        return result

    search.run_trial = run_trial

    space = load_space(ROOT / "search_spaces" / "quick.yaml")
    space.training.epochs = 1
    # The same seeded sample twice in one process: the first pass measures every architecture for the first
    # time (cold), the second finds FLOPs, latency, summaries and series plots cached, as a long study does.
    for label in ("cold: every architecture new to the process", "warm: architectures seen before"):
        totals.clear()
        keras_seconds.clear()
        settings = search.SearchSettings(study_name=f"overhead-{label[:4]}", n_trials=args.trials, sampler="random",
                                         pruner="none", seed=0)
        runner = search.Search(space, settings, console=Console(quiet=True))
        start = time.perf_counter()
        with runner.parent_run():
            runner.run()
        wall = time.perf_counter() - start
        report(label, len(keras_seconds), wall, sum(keras_seconds), totals)


def report(label, trials, wall, keras_seconds, totals):
    overhead = wall - keras_seconds
    print(f"{label}: {trials} one-epoch trials of quick.yaml in {wall:.1f} s; Keras fit + evaluate {keras_seconds:.1f} s")
    print(f"overhead: {overhead / wall:.1%} of wall time, {overhead / trials:.3f} s per trial "
          f"(target: at most 5% and under 0.3 s)")
    print("where it goes, seconds per trial:")
    for name, seconds in totals.most_common():
        print(f"  {name:<20} {seconds / trials:6.3f}")
    accounted = sum(totals.values())
    print(f"  {'everything else':<20} {(overhead - accounted) / trials:6.3f}  (Optuna, sampling, callbacks, progress)\n")


if __name__ == "__main__":
    main()
