"""MLflow writes: no run left RUNNING by a write that fails, no password on disk, no spooled write that blocks the rest."""

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from harness.study.spool import REJECTED, Spool
from harness.study.tracking import Tracker


def test_a_run_whose_params_cannot_be_logged_is_closed_with_the_reason(tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(tracking, "closed", spool_folder=tmp_path / "spool")
    parent = tracker.start_parent("closed", {})
    with pytest.raises(MlflowException):
        tracker.start_trial(parent, "closed", 0, {"insertion": "dense", "note!": 1}, {})
    client = MlflowClient(tracking)
    (trial,) = client.search_runs([tracker.experiment_id], "tags.`harness.role` = 'trial'")
    assert trial.info.status == "FAILED" and "its params could not be logged" in trial.data.tags["failure_reason"]


def test_a_spool_keeps_no_password_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    said = []
    url = "http://u:s3cret@127.0.0.1:1"
    spool = Spool(MlflowClient(url), url, tmp_path / "spool", said.append)
    spool.set_terminated("0123abcd", "FINISHED")  # the server does not answer: kept
    assert spool.held_runs() == ["0123abcd"]
    for file in (tmp_path / "spool").rglob("*"):
        assert not file.is_file() or b"s3cret" not in file.read_bytes()
    assert said and all("s3cret" not in line for line in said)


def test_a_spooled_write_the_server_refuses_is_set_aside_and_the_rest_goes_on(tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking)
    experiment = client.create_experiment("spooled", artifact_location=(tmp_path / "artifacts").as_uri())
    deleted, kept = (client.create_run(experiment).info.run_id for _ in range(2))
    said = []
    spool = Spool(client, tracking, tmp_path / "spool", said.append)
    # Writes kept through an outage; meanwhile someone deleted the first run.
    for run_id in (deleted, kept):
        spool._keep(run_id, "log_batch", {"metrics": [["loss", 0.5, 0, 0]], "params": [], "tags": []})
        spool._keep(run_id, "set_terminated", {"status": "FINISHED"})
    client.delete_run(deleted)
    spool.replay()
    assert client.get_run(kept).info.status == "FINISHED" and client.get_run(kept).data.metrics == {"loss": 0.5}
    assert spool.held_runs() == [] and (tmp_path / "spool" / REJECTED / deleted / "reason.txt").is_file()
    assert len([line for line in said if "refused the spooled writes" in line and deleted in line]) == 1
    # The next search starts cleanly: nothing is retried, nothing raises.
    Tracker(tracking, "spooled", spool_folder=tmp_path / "spool")


def test_a_pid_reused_by_a_later_process_is_not_the_worker_that_died():
    import os

    from harness.study.tracking import process_alive, process_started

    assert process_alive(os.getpid(), process_started())
    assert not process_alive(os.getpid(), process_started() - 3600)  # its pid, but a process that started an hour ago


def test_a_run_that_completes_near_chance_is_flagged_in_mlflow_the_record_and_the_console(tmp_path):
    import types

    import optuna
    from harness.study.lifecycle import flag_if_untrained
    from harness.study.progress import trial_line

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(tracking, "chance", spool_folder=tmp_path / "spool")
    parent = tracker.start_parent("chance", {})
    flagged = {}
    for number, accuracy in ((0, 0.104), (1, 0.93)):
        run_id = tracker.start_trial(parent, "chance", number, {"insertion": "none"}, {})
        result = types.SimpleNamespace(best_val_accuracy=accuracy, test_accuracy=None)
        # A search trial, on 10 classes: judged on validation.
        flag_if_untrained(
            tracker, run_id, result, 10, "search", lambda key, value, n=number: flagged.setdefault(n, value)
        )
        tracker.end_trial(run_id, "COMPLETE")
    assert list(flagged) == [0]  # 0.93 trained
    assert flagged[0] == "not trained: validation accuracy 0.104, less than a tenth of the way from chance (0.100) to 1"
    client = MlflowClient(tracking)
    (run,) = client.search_runs([tracker.experiment_id], "tags.`harness.untrained` != ''")
    assert run.data.tags["optuna.trial_number"] == "0" and run.data.tags["harness.untrained"] == flagged[0]
    trial = optuna.trial.create_trial(value=0.104, user_attrs={"outcome": "COMPLETE", "untrained": flagged[0]})
    assert trial_line(trial, 0.104, "search", "search trial 0").endswith(f"[{flagged[0]}]")
