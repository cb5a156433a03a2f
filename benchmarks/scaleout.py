"""The same quick trials through Ray Tune (2 at a time) and through the local worker pool (2 workers), in one run.

Each path runs a fresh study of the same space, as a user would: `harness
search --workers 2` against `harness search --ray --cpus-per-trial C`, once on a
local Ray cluster the command starts (cold) and once on a cluster already up
(`--ray ADDRESS`, started before the clock runs, as on a real cluster). Pruning
is off, so each trial trains its full budget. It prints each wall time, Ray's
overhead per trial (the difference, spread over the trials) and the ratio.
Goal: under 1 s a trial, and Ray within 1.15x of the pool.

    python benchmarks/scaleout.py [--trials 8] [--rounds 1] [--space search_spaces/quick.yaml]
"""

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _search import search_seconds

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def ray_head(cpus):
    """A Ray head with `cpus` CPUs on this machine, in a process group of its own: its address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray = shutil.which("ray", path=os.path.dirname(sys.executable))
    with tempfile.TemporaryDirectory() as folder:
        head = subprocess.Popen(
            [ray, "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}", f"--temp-dir={folder}"]
            + ["--include-dashboard=false", "--disable-usage-stats"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            while subprocess.run([ray, "status", f"--address=127.0.0.1:{port}"], capture_output=True).returncode:
                time.sleep(1)
            yield f"127.0.0.1:{port}"
        finally:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=ROOT / "search_spaces" / "quick.yaml")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; the best of each path is kept")
    args = parser.parse_args()
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a cluster of this benchmark's own, on 127.0.0.1
    cores = os.cpu_count() or 2
    per_trial = ["--cpus-per-trial", str(max(1, cores // 2))]
    print(f"{cores} CPU cores; {args.trials} trials of {Path(args.space).name}, no pruning\n")
    names = ("worker pool (--workers 2)", "Ray, cold (--ray, local)", "Ray, cluster up (--ray ADDRESS)")
    best = dict.fromkeys(names, float("inf"))

    def keep(name, *how):
        best[name] = min(best[name], search_seconds(args.space, args.trials, "--confirm", "0", *how))

    for _ in range(args.rounds):
        keep(names[0], "--workers", "2")
        keep(names[1], "--ray", *per_trial)  # before the head starts: plain --ray would join a cluster that is up
        with ray_head(cores) as address:
            keep(names[2], "--ray", address, *per_trial)
    pool = best[names[0]]
    for name, seconds in best.items():
        print(f"{name:34s} {seconds:6.1f} s")
    for name in names[1:]:
        ray = best[name]
        print(f"\n{name}: overhead {(ray - pool) / args.trials:+.2f} s a trial (goal: under 1 s), ", end="")
        print(f"{ray / pool:.2f}x the pool's wall time (goal: at most 1.15x)")


if __name__ == "__main__":
    main()
