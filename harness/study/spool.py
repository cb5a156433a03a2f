"""Tracking writes kept on disk while the MLflow tracking server is unreachable, replayed when it answers.

The MLflow client retries each request for a while (`MLFLOW_HTTP_REQUEST_MAX_RETRIES`,
`MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`, `MLFLOW_HTTP_REQUEST_TIMEOUT`: about 4 minutes
by default). Past that cover, a write to a run goes to `FOLDER/<run id>/`: one JSON
line per write, and a copy of each artifact folder. Once a run has a spooled write,
its later writes join the spool, so they replay in the order they were made. A run
is closed (`set_terminated`) only after everything before it has reached the server,
so no run is left RUNNING for good and none is closed early. A write the server
refuses for good (its run was deleted, say) moves that run's spool to
`FOLDER/rejected/<run id>/`, with the reason, and the others go on.
"""

import hashlib
import json
import logging
import shutil
from pathlib import Path

import requests
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

from harness.redaction import redact, redact_text

OPERATIONS = "operations.jsonl"
SERVER_FILE = "server.json"  # which server a run's writes are for: its URI redacted, and a digest that tells them apart
REJECTED = "rejected"  # the runs whose spooled writes the server refused for good


def is_unreachable(error):
    """Whether an MLflow client error means the server did not answer (after the client's retries)."""
    while error is not None:
        if isinstance(error, (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError)):
            return True
        error = error.__cause__ or error.__context__
    return False


class RetryNotice(logging.Handler):
    """Say once, while the MLflow client retries an unreachable server, that it does (urllib3 logs each retry)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.say = print
        self.said = False

    def emit(self, record):
        if not self.said and record.getMessage().startswith("Retrying"):
            self.said = True
            self.say("tracking server unreachable, retrying")


RETRY_NOTICE = RetryNotice()
logging.getLogger("urllib3.connectionpool").addHandler(RETRY_NOTICE)


class Spool:
    """Writes to the runs of one tracking server, sent now or kept under `folder` until it answers."""

    def __init__(self, client, tracking_uri, folder, say=print):
        self.client = client
        self.tracking_uri = tracking_uri
        self.folder = Path(folder)
        self.say = RETRY_NOTICE.say = say
        # A URI's password never goes to disk: the spool knows its server by a digest.
        self.server = {"server": redact(tracking_uri), "key": hashlib.sha256(tracking_uri.encode()).hexdigest()}

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self._write(
            run_id,
            "log_batch",
            {
                "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
                "params": [[p.key, p.value] for p in params],
                "tags": [[t.key, t.value] for t in tags],
            },
        )

    def log_dataset(self, run_id, dataset, context="training"):
        self._write(
            run_id,
            "log_dataset",
            {
                "name": dataset.name,
                "digest": dataset.digest,
                "source_type": dataset.source_type,
                "source": dataset.source,
                "context": context,
            },
        )

    def log_artifacts(self, run_id, local_dir):
        self._write(run_id, "log_artifacts", {"local_dir": str(local_dir)})

    def set_terminated(self, run_id, status):
        self._write(run_id, "set_terminated", {"status": status})

    def _write(self, run_id, operation, payload):
        if not self._holds(run_id):
            try:
                send(self.client, run_id, operation, payload)
                RETRY_NOTICE.said = False  # the server answered: a new outage gets its own line
                return
            except Exception as error:
                if not is_unreachable(error):
                    raise
                self.say(
                    f"tracking server {redact(self.tracking_uri)} unreachable past the MLflow client's retries: "
                    f"run {run_id}'s logging is kept in {self.folder / run_id} until it answers"
                )
        self._keep(run_id, operation, payload)

    def _holds(self, run_id):
        return (self.folder / run_id / OPERATIONS).exists()

    def _keep(self, run_id, operation, payload):
        run_folder = self.folder / run_id
        if not run_folder.is_dir():
            run_folder.mkdir(parents=True)
            (run_folder / SERVER_FILE).write_text(json.dumps(self.server))
        if operation == "log_artifacts":  # the trial's temporary folder is gone by the time the server answers
            copy = run_folder / f"artifacts-{len(self._pending(run_id))}"
            shutil.copytree(payload["local_dir"], copy)
            payload = {"local_dir": str(copy)}
        with open(run_folder / OPERATIONS, "a") as spooled:
            spooled.write(json.dumps({"operation": operation, **payload}) + "\n")

    def held_runs(self):
        """The runs of this server whose writes wait in the spool."""
        if not self.folder.is_dir():
            return []
        return [
            p.name
            for p in self.folder.iterdir()
            if (p / SERVER_FILE).exists() and json.loads((p / SERVER_FILE).read_text())["key"] == self.server["key"]
        ]

    def _pending(self, run_id):
        path = self.folder / run_id / OPERATIONS
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def replay(self):
        """Send this server's spooled writes, run by run, in order; return how many went. Stops at the first
        write the server does not answer; a run whose write it refuses is set aside (`REJECTED`)."""
        sent = 0
        for run_folder in sorted(
            (self.folder / run_id for run_id in self.held_runs()), key=lambda p: p.stat().st_mtime
        ):
            pending = self._pending(run_folder.name)
            while pending:
                entry = pending[0]
                try:
                    send(self.client, run_folder.name, entry.pop("operation"), entry)
                except Exception as error:
                    if is_unreachable(error):
                        return sent
                    set_aside(self, run_folder, error)
                    break
                sent += 1
                pending = pending[1:]
                (run_folder / OPERATIONS).write_text("".join(json.dumps(e) + "\n" for e in pending))
            else:
                shutil.rmtree(run_folder)
        if sent:
            self.say(f"tracking server {redact(self.tracking_uri)} answers again: {sent} spooled write(s) sent")
        return sent


def send(client, run_id, operation, payload):
    """Send one spooled write to the tracking server."""
    if operation == "log_batch":
        client.log_batch(
            run_id,
            metrics=[Metric(*m) for m in payload["metrics"]],
            params=[Param(*p) for p in payload["params"]],
            tags=[RunTag(*t) for t in payload["tags"]],
        )
    elif operation == "log_dataset":
        source = Dataset(payload["name"], payload["digest"], payload["source_type"], payload["source"])
        client.log_inputs(run_id, [DatasetInput(source, [InputTag("mlflow.data.context", payload["context"])])])
    elif operation == "log_artifacts":
        client.log_artifacts(run_id, payload["local_dir"])
    else:
        client.set_terminated(run_id, payload["status"])


def set_aside(spool, run_folder, error):
    """Move a run's spool, which the server refuses, out of the way (with the reason), so later writes go on."""
    reason = redact_text(f"{type(error).__name__}: {error}", spool.tracking_uri).strip().splitlines()[0][:500]
    rejected = spool.folder / REJECTED / run_folder.name
    rejected.parent.mkdir(parents=True, exist_ok=True)
    if rejected.exists():
        shutil.rmtree(rejected)  # an earlier set-aside of the same run, by this spool
    run_folder.rename(rejected)
    (rejected / "reason.txt").write_text(reason + "\n")
    spool.say(
        f"tracking server {redact(spool.tracking_uri)} refused the spooled writes of run {run_folder.name} "
        f"({reason}); they are kept in {rejected} and the rest goes on"
    )
