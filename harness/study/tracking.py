"""MLflow logging through `MlflowClient`: one parent run per search, one child run per trial.

Runs are created and closed explicitly (no global active run), so several
workers can log to one experiment, and a run whose process died can be closed
by whoever finds it.
"""

import functools
import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
from mlflow.entities import Dataset, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from harness.expansion import plot
from harness.params import BASELINE_DEFAULTS, describe
from harness.redaction import redact
from harness.study.servers import SHARED_VIEW_TAG_PREFIX, VIEWS
from harness.study.spool import RETRY_NOTICE, Spool, is_unreachable
from harness.study.storage import StorageError, artifact_root, check_tracking_uri, default_home
from harness.training import device

# The experiment tag MLflow reads to open an experiment in its model-training view rather than GenAI's.
EXPERIMENT_KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
RUN_NAME_PREFIX = {"search": "t", "confirm": "c", "benchmark": "b"}
RESULT_METRICS = ("test_accuracy", "best_val_accuracy", "total_params", "trainable_params", "flops", "train_seconds")
# MLflow run status for each way a trial can end.
CONFIGURATION_TAG = "harness.configuration"  # a run's configuration in words: the confirmation view's groups
UNTRAINED_TAG = "harness.untrained"  # on a run that completed near chance: why it is no result
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}
TRACKING_WAIT = 600  # seconds a new run waits for an unreachable tracking server before the search stops


class TrackingUnreachable(StorageError):
    """The tracking server stayed unreachable for longer than a new run waits."""


@functools.cache
def environment_tags():
    """The backend, its version, the device, determinism, GPU pinning and the project's git commit, once per process."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except OSError:
        commit = ""
    tags = {**device.description(), "git_commit": commit or "unknown"}
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # the GPU a worker was pinned to
        tags["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return tags


def _process_tags():
    return {
        "harness.host": socket.gethostname(),
        "harness.pid": str(os.getpid()),
        "harness.started": str(process_started()),
    }


def process_started():
    """When this process started (psutil's create_time): with its pid, what tells it from a later process that
    reuses the pid."""
    return psutil.Process().create_time()


def process_alive(pid, started=None):
    """Whether process `pid` runs on this host and, if `started` is given, is the process that started then (a
    reused pid is another process). A zombie (dead, not yet reaped by its parent, as a killed worker is until the
    pool waits for it) does not count: its trial would count as in flight."""
    if not pid:
        return False
    try:
        process = psutil.Process(int(pid))
        alive = process.status() != psutil.STATUS_ZOMBIE
        return alive and (started is None or abs(process.create_time() - float(started)) < 1)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process: it exists
        return True


_SUMMARIES = {}


def _model_summary(result):
    """Keras's summary of the trial's model, written once per architecture."""
    if result.architecture not in _SUMMARIES:
        lines = []
        result.model.summary(print_fn=lambda line, **_: lines.append(line))
        _SUMMARIES[result.architecture] = "\n".join(lines) + "\n"
    return _SUMMARIES[result.architecture]


def training_experiment(client, name, artifact_root=None):
    """The id of experiment `name`, created if need be, tagged to open in MLflow's model-training view with the
    views that `servers.view_url` opens stored on it."""
    tags = {
        EXPERIMENT_KIND_TAG: TRAINING_KIND,
        **{f"{SHARED_VIEW_TAG_PREFIX}{view}": json.dumps(state) for view, state in VIEWS.items()},
    }
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_root, tags=tags)
        except MlflowException:
            experiment = client.get_experiment_by_name(name)  # another worker created it first
    for key, value in tags.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def close_dead_runs(tracker):
    """Close the experiment's RUNNING runs whose process, on this host, no longer exists. Returns their ids."""
    host = socket.gethostname()
    closed = []
    for run in tracker.client.search_runs([tracker.experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        pid, started = int(tags.get("harness.pid", "0") or 0), tags.get("harness.started")
        if tags.get("harness.host") == host and not process_alive(pid, started):
            reason = f"process {tags.get('harness.pid')} on {host} died while running"
            tracker.end_trial(run.info.run_id, "FAIL", reason, status="KILLED")
            closed.append(run.info.run_id)
    return closed


def _trial_tags(parent_run_id, study_name, trial_number, stage, params):
    """A trial run's tags: its parent, role, study, stage and trial number, its configuration in words (what the
    confirmation view groups by), where it runs and on what."""
    return {
        "mlflow.parentRunId": parent_run_id,
        CONFIGURATION_TAG: configuration_words(params),
        "harness.role": "trial",
        "harness.study": study_name,
        "harness.stage": stage,
        "optuna.trial_number": str(trial_number),
        "state": "RUNNING",
        **_process_tags(),
        **environment_tags(),
    }


def configuration_words(params):
    """A configuration in words with the recipe it departs from the defaults in, without the seed: 'dense softplus
    p3, width 0.5, learning_rate 0.003', so runs of one configuration share it and a tuned baseline differs from a
    matched one."""
    recipe = [
        f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in params.items()
        if key in BASELINE_DEFAULTS and value != BASELINE_DEFAULTS[key]
    ]
    return ", ".join([describe(params), *recipe])


def _write_artifacts(folder, result, save_model):
    """A trained trial's files: its model summary, its series against the function, and (if asked) its model."""
    (folder / "model_summary.txt").write_text(_model_summary(result))
    params = result.params
    if params.get("insertion", "none") != "none":
        png = plot.series_fit_png(params.get("function", "softplus"), params.get("order", 3), params.get("center", 0.0))
        (folder / "series_fit.png").write_bytes(png)
    if save_model and not result.diverged:
        result.model.save(folder / "model.keras")


STALE_REASON = "its worker stopped sending heartbeats (killed or crashed)"


class Tracker:
    """The MLflow experiment of one study.

    Writes to a run go through `spool`, which keeps them on disk (under `spool_folder`, by default `spool/` in
    the default home) while the tracking server is unreachable; `say` prints a line.
    """

    def __init__(self, tracking_uri, experiment_name, *, spool_folder=None, say=print):
        check_tracking_uri(tracking_uri)
        self.tracking_uri, self.client, self.say = tracking_uri, MlflowClient(tracking_uri), say
        self.spool = Spool(self.client, tracking_uri, spool_folder or default_home() / "spool", say)
        self.spool.replay()
        self.experiment_id = training_experiment(self.client, experiment_name, artifact_root(tracking_uri))

    def start_parent(self, study_name, tags):
        return self._create_run(
            run_name=f"search {study_name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            tags={
                "harness.role": "search",
                "harness.study": study_name,
                **_process_tags(),
                **environment_tags(),
                **tags,
            },
        )

    def end_parent(self, run_id, status):
        self.spool.set_terminated(run_id, status)
        self.spool.replay()
        held = self.spool.held_runs()
        if held:
            self.say(
                f"{len(held)} run(s) still wait in {self.spool.folder} for the tracking server; the next harness "
                f"search or benchmark on {redact(self.tracking_uri)} sends them"
            )

    def _create_run(self, run_name, tags):
        """A new run's id. A run must exist before its trial trains, so this waits out an outage
        (up to `TRACKING_WAIT` seconds, then `TrackingUnreachable`), sending what the spool holds first."""
        deadline = time.monotonic() + TRACKING_WAIT
        waiting = False
        while True:
            try:
                self.spool.replay()
                run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
                RETRY_NOTICE.said = False
                return run.info.run_id
            except Exception as error:
                if not is_unreachable(error):
                    raise
                if time.monotonic() > deadline:
                    raise TrackingUnreachable(
                        f"MLflow tracking server {redact(self.tracking_uri)} unreachable for "
                        f"{TRACKING_WAIT} s: the search stops; run it again to resume"
                    ) from None
                if not waiting:
                    self.say(f"tracking server {redact(self.tracking_uri)} unreachable: the next trial waits for it")
                    waiting = True
                time.sleep(2)

    def start_trial(self, parent_run_id, study_name, trial_number, params, run_params, *, stage="search", dataset=None):
        """A child run named for what it trains, e.g. 't12 dense softplus p3 weighted', with its dataset as input."""
        tags = _trial_tags(parent_run_id, study_name, trial_number, stage, params)
        name = f"{RUN_NAME_PREFIX[stage]}{trial_number} {describe(params)}"
        run_id = self._create_run(
            run_name=name + (f" seed {params.get('seed', 0)}" if stage != "search" else ""), tags=tags
        )
        try:
            logged = [Param(key, str(value)) for key, value in {**params, **run_params}.items()]
            self.spool.log_batch(run_id, params=logged)
            if dataset is not None:
                self.spool.log_dataset(run_id, Dataset(dataset.name, dataset.digest, "local", dataset.name))
        except Exception as error:  # the run exists: it must not stay RUNNING for want of its params
            self.end_trial(run_id, "FAIL", f"its params could not be logged: {type(error).__name__}: {error}")
            raise
        return run_id

    def log_best_so_far(self, parent_run_id, best_val_accuracy, trials, step):
        """The search's best validation accuracy and trial count so far, on its parent run."""
        self.metrics_logger(parent_run_id)({"best_val_accuracy": best_val_accuracy, "trials": trials}, step)

    def metrics_logger(self, run_id):
        """log(metrics, step): a dict of metrics into the run at one step, through the spool (what the epoch and
        norm callbacks log through)."""

        def log(metrics, step):
            now = int(time.time() * 1000)
            self.spool.log_batch(
                run_id, metrics=[Metric(name, float(value), now, step) for name, value in metrics.items()]
            )

        return log

    def log_result(self, run_id, result, save_model=True):
        """Final metrics and artifacts of a trial that trained: its model summary, series plot and (if asked) model."""
        now = int(time.time() * 1000)
        values = {name: getattr(result, name) for name in RESULT_METRICS}
        if result.latency_seconds is not None:
            values["latency_ms"] = result.latency_seconds * 1000
        metrics = [Metric(name, float(value), now, 0) for name, value in values.items() if value is not None]
        self.spool.log_batch(run_id, metrics=metrics)
        with tempfile.TemporaryDirectory() as folder:
            _write_artifacts(Path(folder), result, save_model)
            self.spool.log_artifacts(run_id, folder)

    def tag(self, run_id, key, value):
        self.spool.log_batch(run_id, tags=[RunTag(key, value)])

    def end_trial(self, run_id, state, reason=None, *, status=None):
        """Tag the trial's Optuna state and reason, and close the run (status: MLflow's, if not the usual)."""
        tags = [RunTag("state", state)] + ([RunTag("failure_reason", reason[:5000])] if reason else [])
        self.spool.log_batch(run_id, tags=tags)
        self.spool.set_terminated(run_id, status or RUN_STATUS[state])

    def close_run_of_stale_trial(self, study, trial, reason=STALE_REASON):
        """Optuna's failed_trial_callback: the run of a trial failed as its worker is gone is closed FAILED too, even
        one closed FINISHED just before the worker died, before the study recorded it (the study's FAIL rules)."""
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id and self.client.get_run(run_id).info.status in ("RUNNING", "FINISHED"):
            self.end_trial(run_id, "FAIL", reason)
