"""A local worker pool: several worker processes on one study and one MLflow parent run.

Each worker is a process of its own (TensorFlow's settings are per process),
pinned to a GPU by `CUDA_VISIBLE_DEVICES` or given `cores / workers` CPU
threads. A worker gets its job as data, the search's own settings, in the
environment (where passwords stay out of argv, which `ps` shows), and works
through the study's storage alone.

A worker on any machine (a Slurm array's task, say) joins a running stage by the
study's name alone (`join_search`): the stage's owner records on the study what
joiners need, and waits for their trials before it closes its parent run.
"""

import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import time

import optuna

from harness.study.search import JOIN, Search
from harness.study.settings import SearchSettings

WORKER_JOB = "HARNESS_WORKER_JOB"  # the environment variable holding a worker's job, as JSON
JOIN_POLL = 2  # seconds between looks for the stage to join


@dataclasses.dataclass
class WorkerPool:
    """How many workers (one per entry of `gpus` if given) run the search of `space_path` (read with `data_dir`)."""

    space_path: str
    workers: int
    gpus: list | None = None
    threads: int | None = None
    data_dir: str | None = None

    def run(self, search, say=functools.partial(print, flush=True)):
        """Run `search`'s stage in the workers until each has stopped.

        Raises KeyboardInterrupt once every worker has stopped if one was interrupted.
        """
        processes = [self._start(search, index, say) for index in range(self.workers)]
        if search.settings.stage == "search":
            say(
                "join from other machines with the same --storage, --tracking-uri, --study and "
                f"--parent-run-id {search.parent_run_id}"
            )
        try:
            codes = [p.wait() for p in processes]
        except KeyboardInterrupt:
            for p in processes:
                p.send_signal(signal.SIGINT)
            codes = [p.wait() for p in processes]
        for index, code in enumerate(codes, start=1):
            if code:
                print(f"worker {index} exited with code {code}; the other workers carried on", file=sys.stderr)
        # A worker that died in a trial no other worker started after leaves it RUNNING: with all of them gone, close it.
        search.close_what_dead_processes_left()
        if 130 in codes:
            raise KeyboardInterrupt

    def job(self, search, index):
        """Worker `index`'s job: the search's settings under its parent run, with a sampler seed of its own."""
        settings = search.settings
        threads = self.threads or max(1, (os.cpu_count() or 1) // self.workers)
        seed = None if settings.seed is None else settings.seed + index + 1
        settings = dataclasses.replace(settings, seed=seed, parent_run_id=search.parent_run_id)
        return {
            "space": str(self.space_path),
            "data_dir": self.data_dir,
            "threads": threads,
            "settings": dataclasses.asdict(settings),
        }

    def _start(self, search, index, say):
        job = self.job(search, index)
        env = {**os.environ, WORKER_JOB: json.dumps(job)}
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpus[index])
        process = subprocess.Popen([sys.executable, "-m", "harness.cli", "worker"], env=env)
        placement = f"GPU {self.gpus[index]}" if self.gpus else f"{job['threads']} CPU thread(s)"
        say(f"{search.settings.stage} worker {index + 1}: pid {process.pid}, {placement}")
        return process


def run_worker(job):
    """Run a `WorkerPool` worker's `job`: trials of the study until it is full."""
    from harness.study.space import load_space
    from harness.training.device import configure

    settings = SearchSettings(**job["settings"])
    configure(job["threads"], settings.mixed_precision)
    search = Search(load_space(job["space"], job["data_dir"]), settings)
    with search.parent_run():
        search.run()
    return 0


def join_search(study_name, storage, tracking_uri, *, data_dir=None, threads=None, wait=600, say=print):
    """Join the stage another command runs on study `study_name` (`harness worker --study`, a Slurm array's task):
    wait up to `wait` seconds for its owner to record it, then run its trials under its parent run until the study
    holds them. Returns 0."""
    from harness.study.space import Space
    from harness.study.storage import open_storage
    from harness.training.device import configure

    opened, deadline = open_storage(storage), time.monotonic() + wait
    while (record := _join_record(study_name, opened)) is None:
        if time.monotonic() > deadline:
            raise ValueError(f"--study {study_name}: no search of that name started within {wait:g} s to join")
        time.sleep(JOIN_POLL)
    space = Space.model_validate(record["space"])
    if data_dir is not None:
        space.dataset.data_dir = data_dir
    settings = SearchSettings(**record["settings"], storage=storage, tracking_uri=tracking_uri)
    configure(threads, settings.mixed_precision)
    say(f"joining {settings.stage} {settings.optuna_study!r} under MLflow run {settings.parent_run_id}")
    search = Search(space, settings)
    with search.parent_run():
        search.run()
    return 0


def _join_record(study_name, storage):
    """What the stage on `study_name` recorded for joiners, or None while it has not started."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage).user_attrs.get(JOIN)
    except KeyError:
        return None
