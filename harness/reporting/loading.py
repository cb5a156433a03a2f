"""A study read into one pandas table: Optuna's record of each trial joined with its MLflow run, both stages."""

import numpy as np
import optuna
import pandas as pd
import yaml

from harness.params import PARAM_KEYS
from harness.redaction import redact
from harness.reporting.tables import ACCURACY
from harness.statistics import untrained
from harness.study.records import (
    BASELINE,
    BASELINE_TURN,
    BENCHMARK_RUN,
    CONFIRM_SUFFIX,
    OUTCOME,
    PILOT,
    SURPLUS,
    TUNED_BASELINE,
    configuration_key,
    enqueued_params,
)
from harness.study.storage import open_storage


def load_trials(study_name, storage, tracking_uri=None):
    """One row per trial of `study_name` and of its confirmation study: Optuna's record joined with its MLflow run.

    Raises ValueError if the study does not exist or has no completed trial.
    """
    opened = open_storage(storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=opened)
    except KeyError:
        frame = _trials_from_mlflow(study_name, tracking_uri) if tracking_uri else None
        if frame is None:
            raise ValueError(
                f"study {study_name!r} does not exist in {redact(storage)}"
                + (f" nor as an MLflow experiment in {redact(tracking_uri)}" if tracking_uri else "")
            ) from None
        if not (frame["state"] == "COMPLETE").any():
            raise ValueError(f"study {study_name!r} has no completed trial to report on")
        return frame
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise ValueError(f"study {study_name!r} has no completed trial to report on")
    # Both stages log to the study's one experiment: its runs are read once.
    runs = _trial_runs(study_name, tracking_uri) if tracking_uri is not None else None
    frames = [_study_frame(study, study_name, runs)]
    try:
        confirm = optuna.load_study(study_name=study_name + CONFIRM_SUFFIX, storage=opened)
        if confirm.trials:
            frames.append(_study_frame(confirm, study_name, runs))
    except KeyError:
        pass  # never confirmed
    frame = pd.concat(frames, ignore_index=True)
    for column in ("failure_reason", "seed", "run_url"):
        if column not in frame:
            frame[column] = np.nan
    return frame


def _study_frame(study, study_name, runs):
    """`study`'s trials as rows, joined with `runs` (`_trial_runs`' answer, or None)."""
    frame = study.trials_dataframe(
        attrs=("number", "state", "values", "params", "user_attrs", "duration", "datetime_start")
    )
    tuned = study.user_attrs.get(TUNED_BASELINE)
    if tuned is not None:  # a confirmation's runs of the search's best baseline
        tuned_key = configuration_key(tuned)
        frame[TUNED_BASELINE] = [
            configuration_key(enqueued_params(t)) == tuned_key for t in study.get_trials(deepcopy=False)
        ]
    surplus = f"user_attrs_{SURPLUS}"
    if surplus in frame:  # asked for once the study was full: never trained
        frame = frame[~frame.pop(surplus).eq(True)]
    stage = study.user_attrs.get("stage", "search")
    pilot = frame.pop(f"user_attrs_{PILOT}").eq(True) if f"user_attrs_{PILOT}" in frame else np.zeros(len(frame), bool)
    frame = frame.rename(columns=lambda c: c.removeprefix("params_").removeprefix("user_attrs_"))
    # The first objective is `value`, `values_0`, or `values_val_accuracy` once the study names its metrics.
    frame = frame.rename(
        columns={
            "number": "trial",
            "values_0": ACCURACY,
            "value": ACCURACY,
            f"values_{ACCURACY}": ACCURACY,
            "latency_seconds": "latency_ms",
        }
    )
    # A sampled trial keeps its params as params, an enqueued one (the baseline) as user attrs: one column each.
    frame = frame.T.groupby(level=0, sort=False).first().T.infer_objects()
    if "latency_ms" in frame:
        frame["latency_ms"] = frame["latency_ms"] * 1000
    frame["duration_s"] = frame.pop("duration").dt.total_seconds()
    frame.insert(0, "stage", np.where(pilot, "pilot", stage))  # a pilot's runs size a stage and are not tested
    frame.insert(0, "study", study_name)
    if "insertion" in frame:
        frame["insertion"] = frame["insertion"].fillna("none")
    frame["untrained"] = _untrained(frame, stage, study.user_attrs.get("num_classes"))
    if runs is not None and "mlflow_run_id" in frame:
        frame = _join_mlflow(frame, runs)
    drop = [
        c for c in frame.columns if c.startswith("values_") or c in (OUTCOME, BENCHMARK_RUN, BASELINE, BASELINE_TURN)
    ]
    return frame.drop(columns=drop)


def _untrained(frame, stage, num_classes):
    """Which completed runs did not train (`statistics.untrained`), judged on the accuracy their stage is judged on;
    from the trials' own flags where the study does not say its number of classes."""
    if not num_classes:
        return frame["untrained"].notna() if "untrained" in frame else False
    judged = frame.get(ACCURACY if stage == "search" else "test_accuracy", pd.Series(np.nan, index=frame.index))
    return (frame["state"] == "COMPLETE") & untrained(judged.astype(float).fillna(1.0), num_classes)


def _trial_runs(study_name, tracking_uri):
    """The experiment's trial runs, and the base of links to them, or None if there is no such experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study_name)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], "tags.`harness.role` = 'trial'", max_results=50000)
    base = redact(tracking_uri) if tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    return runs, f"{base}/#/experiments/{experiment.experiment_id}/runs/"


def _trials_from_mlflow(study_name, tracking_uri):
    """A study searched by another engine (keras-tuner): its trials, read from its MLflow runs alone."""
    found = _trial_runs(study_name, tracking_uri)
    if not found or not found[0]:
        return None
    runs, link = found
    metrics = {
        "best_val_accuracy": ACCURACY,
        "test_accuracy": "test_accuracy",
        "flops": "flops",
        "total_params": "total_params",
        "trainable_params": "trainable_params",
        "latency_ms": "latency_ms",
        "train_seconds": "train_seconds",
    }
    rows = []
    for run in runs:
        tags, params = run.data.tags, run.data.params
        rows.append(
            {
                "study": study_name,
                "stage": tags.get("harness.stage", "search"),
                "trial": int(tags["optuna.trial_number"]),
                "state": tags.get("state"),
                **{column: run.data.metrics.get(metric) for metric, column in metrics.items()},
                # Params come back as strings; YAML reads them as the values they were (never evaluated).
                **{
                    key: yaml.safe_load(value)
                    for key, value in params.items()
                    if key in PARAM_KEYS + ("dataset", "epochs")
                },
                "failure_reason": tags.get("failure_reason"),
                "mlflow_run_id": run.info.run_id,
                "run_url": link + run.info.run_id,
            }
        )
    frame = pd.DataFrame(rows).sort_values("trial").reset_index(drop=True)
    if "insertion" in frame:
        frame["insertion"] = frame["insertion"].fillna("none")
    return frame


def _join_mlflow(frame, found):
    runs, link = found
    # Optuna keeps a trial's outcome, accuracy and FLOPs; its other costs live in its MLflow run, and so does the
    # seed of a sampled trial (an enqueued run's seed is among its Optuna params).
    logged = ("total_params", "trainable_params", "latency_ms", "train_seconds")
    records = pd.DataFrame(
        {
            "mlflow_run_id": run.info.run_id,
            "run_url": link + run.info.run_id,
            "seed_logged": pd.to_numeric(run.data.params.get("seed"), errors="coerce"),
            **{f"{metric}_logged": run.data.metrics.get(metric) for metric in logged},
        }
        for run in runs
    )
    if records.empty:
        return frame
    frame = frame.merge(records, on="mlflow_run_id", how="left")
    for column in ("seed", *logged):
        if column not in frame:
            frame[column] = np.nan
        frame[column] = frame[column].fillna(frame.pop(f"{column}_logged"))
    return frame
