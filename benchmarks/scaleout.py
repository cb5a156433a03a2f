"""The same quick trials through Ray Tune (2 at a time) and through the local worker pool (2 workers), in one run.

Each path runs a fresh study of the same space from a cold start, as a user
would: `harness search --ray --cpus-per-trial C` (a local Ray cluster started by
the command) against `harness search --workers 2`. Pruning is off and the
sampler is the grid, so both train the same trials. It prints each wall time,
Ray's overhead per trial (the difference, spread over the trials) and the
ratio. Goal: under 1 s a trial, and Ray within 1.15x of the pool.

    python benchmarks/scaleout.py [--trials 8] [--space search_spaces/quick.yaml]
"""

import argparse
import os
from pathlib import Path

from _search import search_seconds

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=ROOT / "search_spaces" / "quick.yaml")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; the best of each path is kept")
    args = parser.parse_args()
    cpus = max(1, (os.cpu_count() or 2) // 2)
    paths = {
        "worker pool (--workers 2)": ["--workers", "2"],
        "Ray Tune (--ray, 2 at a time)": ["--ray", "--cpus-per-trial", str(cpus)],
    }
    print(f"{os.cpu_count()} CPU cores; {args.trials} trials of {Path(args.space).name}, no pruning, cold starts\n")
    best = {name: float("inf") for name in paths}
    for _ in range(args.rounds):
        for name, how in paths.items():
            best[name] = min(best[name], search_seconds(args.space, args.trials, "--confirm", "0", *how))
    pool, ray = best.values()
    for name, seconds in best.items():
        print(f"{name:32s} {seconds:6.1f} s")
    print(f"\nRay's overhead per trial: {(ray - pool) / args.trials:+.2f} s (goal: under 1 s)")
    print(f"wall time, Ray / pool: {ray / pool:.2f}x (goal: at most 1.15x)")


if __name__ == "__main__":
    main()
