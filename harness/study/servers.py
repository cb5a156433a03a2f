"""The browser views of a study: the MLflow UI over its runs and the Optuna dashboard over its trials.

Each binds 127.0.0.1 unless told otherwise, keeps passwords off command lines
and screens, says when it answers, and stops whole on one SIGTERM or Ctrl-C.
"""

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import requests

from harness.redaction import redact

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
