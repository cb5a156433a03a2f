"""Trials per hour for 1 worker against N workers on one study, measured in one run.

Each setting runs a fresh study of the same space (default quick.yaml) from a
cold start, as a user would: `harness search --workers W`. With several workers
each gets cores // W TensorFlow threads, so they share the machine rather than
oversubscribe it. Pruning is off, so every trial trains its full budget.

    python benchmarks/workers.py [--trials 16] [--workers 2] [--space search_spaces/quick.yaml]
"""

import argparse
import os
from pathlib import Path

from _search import search_seconds

ROOT = Path(__file__).resolve().parents[1]


def trials_per_hour(space, trials, workers, seed):
    seconds = search_seconds(space, trials, "--workers", str(workers), seed=seed)
    return trials / seconds * 3600, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=ROOT / "search_spaces" / "quick.yaml")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores; {args.trials} trials of {Path(args.space).name}, random sampler, no pruning\n")
    results = {}
    for workers in (1, args.workers):
        results[workers] = trials_per_hour(args.space, args.trials, workers, args.seed)
        rate, seconds = results[workers]
        threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else "TF default"
        print(f"{workers} worker(s), threads {threads}: {seconds:6.1f} s, {rate:7.0f} trials/hour")
    print(f"\nspeed-up of {args.workers} workers over 1: {results[args.workers][0] / results[1][0]:.2f}x")


if __name__ == "__main__":
    main()
