"""A local worker pool: several `harness search` processes on one study and one MLflow parent run.

Each worker is a process of its own (TensorFlow's settings are per process),
pinned to a GPU by `CUDA_VISIBLE_DEVICES` or given `cores / workers` CPU
threads. Workers coordinate through the study's storage alone.
"""

import dataclasses
import functools
import os
import signal
import subprocess
import sys

from harness.study.search import counted_trials

# Where `harness search` reads its storage and tracking URLs: passwords stay out of argv, which `ps` shows.
STORAGE_VARIABLE, TRACKING_VARIABLE = "HARNESS_STORAGE", "HARNESS_TRACKING_URI"


@dataclasses.dataclass
class WorkerPool:
    """How many workers (one per entry of `gpus` if given) run the search of `space_path`."""

    space_path: str
    workers: int
    gpus: list | None = None
    threads: int | None = None
    seed: int | None = None
    mixed_precision: bool = False

    def run(self, search, say=functools.partial(print, flush=True)):
        """Run `search`'s stage in the workers until its study is full; return 0, or 1 if it is not.

        Raises KeyboardInterrupt once every worker has stopped if one was interrupted.
        """
        processes = [self._start(search, index, say) for index in range(self.workers)]
        if search.settings.stage == "search":
            say("join from other machines with the same --storage, --tracking-uri, --study and "
                f"--parent-run-id {search.parent_run_id}")
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
        if len(counted_trials(search.study)) >= search.settings.n_trials:
            return 0
        search.lifecycle.parent_status = "FAILED"
        return 1

    def _start(self, search, index, say):
        settings = search.settings
        threads = self.threads or max(1, (os.cpu_count() or 1) // self.workers)
        command = [
            sys.executable, "-m", "harness.cli", "search", "--space", str(self.space_path),
            "--study", settings.study_name, "--trials", str(settings.n_trials),
            "--sampler", settings.sampler, "--pruner", settings.pruner,
            "--heartbeat", str(settings.heartbeat_interval), "--parent-run-id", search.parent_run_id,
            "--threads", str(threads), "--stage", settings.stage, "--save-models", settings.save_models,
            "--worker-index", str(index + 1),
        ]
        command += ["--timeout", str(settings.timeout)] if settings.timeout else []
        command += ["--seed", str(self.seed)] if self.seed is not None else []
        command += ["--mixed-precision"] if self.mixed_precision else []
        env = {**os.environ, STORAGE_VARIABLE: settings.storage, TRACKING_VARIABLE: settings.tracking_uri}
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpus[index])
        process = subprocess.Popen(command, env=env)
        placement = f"GPU {self.gpus[index]}" if self.gpus else f"{threads} CPU thread(s)"
        say(f"{settings.stage} worker {index + 1}: pid {process.pid}, {placement}")
        return process
