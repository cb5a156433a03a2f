"""A real `mlflow server` killed in the middle of a search, then started again: nothing is lost."""

import os
import signal
import subprocess
import sys
import time

import optuna
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import free_port, start_mlflow_server

SPACE = {
    "dataset": {"name": "digits", "train_size": 800, "val_size": 100, "test_size": 100},
    "training": {"epochs": 3, "seed": 0},
    "params": {"insertion": "dense", "function": ["softplus", "tanh"], "order": 3, "width": 1.0},
}


def start_server(folder, port):
    return start_mlflow_server(f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts", port)


def stop_server(server):
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)


def test_a_tracking_server_outage_mid_search_loses_nothing(tmp_path):
    port, folder = free_port(), tmp_path / "server"
    folder.mkdir()
    url = f"http://127.0.0.1:{port}"
    server = start_server(folder, port)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # The MLflow client's cover, cut from minutes to one immediate retry of 3 s.
    env = {
        **os.environ,
        "HARNESS_HOME": str(tmp_path / "home"),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "3",
    }
    search = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "search",
            "--space",
            str(tmp_path / "space.yaml"),
            "--study",
            "outage",
            "--trials",
            "3",
            "--sampler",
            "grid",
            "--pruner",
            "none",
            "--confirm",
            "0",
            "--storage",
            storage,
            "--tracking-uri",
            url,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        client = MlflowClient(url)
        while not (
            (experiment := client.get_experiment_by_name("outage"))
            and client.search_runs([experiment.experiment_id], "tags.`optuna.trial_number` = '1'")
        ):
            assert search.poll() is None, search.stdout.read()
            time.sleep(0.2)
        stop_server(server)  # trial 1 is training: its epochs, results and end go nowhere for now
        before = []
        for line in search.stdout:  # down until a write has outlasted the client's retries and gone to the spool
            before.append(line)
            if "unreachable past the MLflow client's retries" in line or "the next trial waits for it" in line:
                break  # the second: trial 1 ended before the outage, which the assertions below then report
        server = start_server(folder, port)
        printed, _ = search.communicate(timeout=600)
        printed = "".join(before) + printed
    finally:
        if search.poll() is None:
            search.kill()
        stop_server(server)
    assert search.returncode == 0, printed[-3000:]
    assert "tracking server unreachable, retrying" in printed
    assert "unreachable past the MLflow client's retries" in printed and "spooled write(s) sent" in printed
    assert "Traceback" not in printed

    # Read back from the server's own store and artifact folder: starting it a third time would only cost time.
    study = optuna.load_study(study_name="outage", storage=storage)
    assert len(study.trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
    trials = [r for r in runs if r.data.tags.get("harness.role") == "trial"]
    assert len(trials) == 3 and all(r.info.status == "FINISHED" for r in runs)
    for run in trials:
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 3
        assert "test_accuracy" in run.data.metrics and run.data.tags["state"] == "COMPLETE"
        assert list((folder / "artifacts").glob(f"*/{run.info.run_id}/artifacts/model_summary.txt"))
    assert not any((tmp_path / "home" / "spool").glob("*"))
