"""The timing the scale-out benchmarks share: one `harness search` of a fresh study, from a cold start."""

import os
import subprocess
import sys
import tempfile
import time


def search_seconds(space, trials, *flags, seed=0):
    """Seconds `harness search` takes for `trials` trials of `space` in a fresh home (random sampler from `seed`, no
    pruning), run with `flags` (`--workers 2`, `--ray`, ...)."""
    with tempfile.TemporaryDirectory() as home:
        command = [
            *(sys.executable, "-m", "harness.cli", "search", "--space", str(space), "--study", "bench"),
            *("--trials", str(trials), "--sampler", "random", "--seed", str(seed), "--pruner", "none", *flags),
        ]
        start = time.perf_counter()
        subprocess.run(command, env={**os.environ, "HARNESS_HOME": home}, check=True, capture_output=True)
        return time.perf_counter() - start
