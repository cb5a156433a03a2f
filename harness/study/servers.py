"""The servers a study uses: the MLflow UI over its runs and the Optuna dashboard over its trials (the browser
views), and Optuna's gRPC storage proxy in front of its database (many workers, one database client).

Each binds 127.0.0.1 unless told otherwise, keeps passwords off command lines
and screens, says when it answers, and stops whole on one SIGTERM or Ctrl-C.
"""

import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import optuna
import requests

from harness.redaction import redact
from harness.study.proxy import PROXY_PREFIX, HeartbeatProxy
from harness.study.storage import open_storage

# Runs-list views stored on each study's experiment as MLflow's own Share button stores one (a tag with this prefix,
# named in the page's URL). The search view: the search trials flat (their parent filtered out, as MLflow keeps
# children collapsed), ranked by validation accuracy, the selection metric, with no test accuracy. The confirmation
# view: the seeded runs grouped by configuration (`harness.configuration`), each row a seed, with test accuracy.
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
SEARCH_VIEW, CONFIRMATION_VIEW = "harness-search", "harness-confirmation"
_PARAM_COLUMNS = tuple(
    f"params.`{key}`"
    for key in (
        "insertion",
        "function",
        "order",
        "mode",
        "coefficients",
        "per_unit",
        "conditioning",
        "width",
        "learning_rate",
    )
)
_COST_COLUMNS = tuple(f"metrics.`{key}`" for key in ("flops", "total_params", "latency_ms", "train_seconds"))
VIEWS = {
    SEARCH_VIEW: {
        "searchFilter": "tags.`harness.role` = 'trial' and tags.`harness.stage` = 'search'",
        "orderByKey": "metrics.`best_val_accuracy`",
        "orderByAsc": False,
        "selectedColumns": ["attributes.`Dataset`", *_PARAM_COLUMNS, "metrics.`best_val_accuracy`", *_COST_COLUMNS],
    },
    CONFIRMATION_VIEW: {
        "searchFilter": "tags.`harness.role` = 'trial' and tags.`harness.stage` != 'search'",
        "orderByKey": "params.`seed`",
        "orderByAsc": True,
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": "harness.configuration"}],
        },
        "selectedColumns": [
            "attributes.`Dataset`",
            "tags.`harness.configuration`",
            "params.`seed`",
            "metrics.`test_accuracy`",
            *_COST_COLUMNS,
            "tags.`harness.untrained`",
        ],
    },
}
VIEW_WORDS = {
    SEARCH_VIEW: "search trials, by validation accuracy",
    CONFIRMATION_VIEW: "confirmation runs, by configuration and seed, with test accuracy",
}


def view_url(ui_url, experiment_id, view):
    """The MLflow UI address of one of an experiment's `VIEWS`, in the model-training view."""
    return f"{ui_url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={view}"


class ServerError(ValueError):
    """A browser view that could not start or stopped on its own."""


START_TIMEOUT = 180  # seconds the MLflow UI may take to answer (about 10 s on 2 cores)


def _wait_until_answering(url, alive, timeout):
    """Poll `url` until it answers; False if `alive()` turns false or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            requests.get(url, timeout=5)
            return True
        except requests.RequestException:
            time.sleep(0.5)
    return False


def mlflow_ui(tracking_uri, *, host="127.0.0.1", port=5000, say=print):
    """Run `mlflow ui` over `tracking_uri` until it exits or this process is told to stop; return its exit code.

    MLflow runs in a process group of its own, so its uvicorn workers stop
    with it. The store's URI reaches it through the environment, where `ps`
    does not show it.
    """
    # One worker, without MLflow's job runner (seven more processes, for GenAI jobs): one researcher's browser needs
    # no more, and it answers in half the time (about 10 s on 2 cores instead of 22).
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": tracking_uri, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port), "--workers", "1"]
    with tempfile.TemporaryFile() as log:
        ui = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def stop(signum=None, frame=None):
            if ui.poll() is None:
                os.killpg(ui.pid, signal.SIGTERM)

        previous = {s: signal.signal(s, lambda signum, frame: stop()) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            say(f"starting the MLflow UI over {redact(tracking_uri)} ...")
            url = f"http://{host}:{port}"
            if _wait_until_answering(f"{url}/health", lambda: ui.poll() is None, START_TIMEOUT):
                say(f"MLflow UI at {url} (Ctrl-C stops it)")
                for name, experiment_id in _studies(tracking_uri):
                    for view, words in VIEW_WORDS.items():
                        say(f"  {name}, {words}: {view_url(url, experiment_id, view)}")
            code = ui.wait()
        finally:
            stop()
            ui.wait()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if code not in (0, -signal.SIGTERM):
            log.seek(0)
            lines = log.read().decode(errors="replace").strip().splitlines() or ["no output"]
            raise ServerError(
                f"the MLflow UI exited with code {code}: {lines[-1].replace(tracking_uri, redact(tracking_uri))}"
            )
    return 0


def _studies(tracking_uri):
    """(name, experiment id) of each experiment in the store that carries the search view."""
    from mlflow.tracking import MlflowClient

    experiments = MlflowClient(tracking_uri).search_experiments(
        filter_string=f"tags.`{SHARED_VIEW_TAG_PREFIX}{SEARCH_VIEW}` != ''"
    )
    return [(e.name, e.experiment_id) for e in experiments]


def optuna_dashboard(storage, *, host="127.0.0.1", port=8080, say=print):
    """Serve optuna-dashboard over `storage` (an Optuna storage object) in this process until it is stopped."""
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise ValueError("the Optuna dashboard is an optional extra: pip install 'taylor-harness[dashboard]'") from None
    server = threading.Thread(target=run_server, args=(storage,), kwargs={"host": host, "port": port}, daemon=True)
    server.start()
    url = f"http://{host}:{port}"
    if _wait_until_answering(f"{url}/api/meta", server.is_alive, START_TIMEOUT):
        say(f"Optuna dashboard at {url} (Ctrl-C stops it)")
    try:
        server.join()
    except KeyboardInterrupt:
        pass
    return 0


PROXY_APPLICATION = "harness-storage-proxy"  # how the proxy's connections name themselves to PostgreSQL
DATABASES = ("postgresql", "mysql", "sqlite")


def storage_proxy(storage_url, *, host="127.0.0.1", port=13000, address_file=None, say=print):
    """Serve `storage_url`'s database on HOST:PORT until stopped; once it answers, say the address workers use
    (and write it to `address_file`, a new file, for a cluster's jobs to read)."""
    if not storage_url.startswith(DATABASES):
        raise ValueError(
            f"--storage {redact(storage_url)}: the proxy serves a database (one of {', '.join(DATABASES)})"
        )
    if address_file is not None and Path(address_file).exists():
        raise ValueError(f"--address-file {address_file}: it exists; name a new file")
    _check_port_free(host, port)
    # Optuna's cache in front of the database, as its docs advise for the proxy.
    storage = optuna.storages.get_storage(open_storage(storage_url, application_name=PROXY_APPLICATION))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        server = threading.Thread(
            target=optuna.storages.run_grpc_proxy_server,
            args=(storage,),
            kwargs={"host": host, "port": port},
            daemon=True,  # a Ctrl-C or a job's end stops the process, and the server with it
        )
        server.start()
        address = f"{PROXY_PREFIX}{socket.gethostname() if host == '0.0.0.0' else host}:{port}"
        while server.is_alive() and not _answers(address):
            pass
    if not server.is_alive():
        raise ValueError(f"storage proxy: cannot listen on {host}:{port}")
    if address_file is not None:
        Path(f"{address_file}.partial").write_text(address + "\n")
        os.replace(f"{address_file}.partial", address_file)  # readers never see half an address
    say(f"storage proxy for {redact(storage_url)}: workers use --storage {address}")
    while server.is_alive():
        server.join(timeout=1)  # a join without a timeout would hold Ctrl-C off


def _check_port_free(host, port):
    """gRPC shares a port with another server that asked to (SO_REUSEPORT): a second proxy would answer half the
    calls. A plain bind finds the port taken."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        why = "another process listens there" if error.errno == errno.EADDRINUSE else error.strerror
        raise ValueError(f"--port {port}: cannot listen on {host}:{port} ({why})") from None


def _answers(url):
    try:
        HeartbeatProxy(url).close()
    except ValueError:
        return False
    return True
