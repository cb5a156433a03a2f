"""The harness's overhead: the share of each trial's wall time spent outside Keras fit and evaluate.

Runs a search of 1-epoch trials on the quick space (no pruning) in-process and
compares the study's wall time with the time inside `model.fit` and
`model.evaluate`. The rest is model building, FLOP counting, latency timing,
MLflow logging and artifacts, plots and Optuna's bookkeeping; the parts that
can be wrapped are timed separately. Target: at most 5% and under 1 s a trial.

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

    space = load_space(ROOT / "search_spaces" / "quick.yaml")
    space.training.epochs = 1
    settings = search.SearchSettings(study_name="overhead", n_trials=args.trials, sampler="random", pruner="none", seed=0)
    runner = search.Search(space, settings, console=Console(quiet=True))
    start = time.perf_counter()
    study = runner.run()
    wall = time.perf_counter() - start

    done = [t for t in study.trials if "train_seconds" in t.user_attrs]
    keras_seconds = sum(t.user_attrs["train_seconds"] + t.user_attrs["evaluate_seconds"] for t in done)
    overhead = wall - keras_seconds
    print(f"{len(done)} one-epoch trials of quick.yaml in {wall:.1f} s; Keras fit + evaluate {keras_seconds:.1f} s")
    print(f"overhead: {overhead / wall:.1%} of wall time, {overhead / len(done):.2f} s per trial "
          f"(target: at most 5% and under 1 s)\n")
    print("where it goes, seconds per trial:")
    for name, seconds in totals.most_common():
        print(f"  {name:<20} {seconds / len(done):6.3f}")
    accounted = sum(totals.values())
    print(f"  {'everything else':<20} {(overhead - accounted) / len(done):6.3f}  (Optuna, sampling, callbacks, progress)")


if __name__ == "__main__":
    main()
