"""Reports: does a Taylor expansion pay for its cost, and which one?

Every table is a pandas DataFrame from a small function, so the report can be
rebuilt, or taken apart, from Python. `write_report` assembles them, with
plots, into `index.md` and `index.html`.
"""

import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import yaml
from scipy import stats

from harness.model import MODEL_KEYS
from harness.space import PARAM_KEYS
from harness.storage import open_storage
from harness.train import TRAINING_DEFAULTS

DIMENSIONS = ("function", "order", "coefficients", "insertion", "mode")
COSTS = {"flops": "FLOPs per sample", "total_params": "parameters", "latency_ms": "latency (ms per sample)", "train_seconds": "train time (s)"}
CONFIG_COLUMNS = MODEL_KEYS + tuple(TRAINING_DEFAULTS)
# What makes a configuration: everything but the seed, which repeats it.
CONFIGURATION_KEYS = tuple(c for c in CONFIG_COLUMNS if c != "seed")
ACCURACY = "val_accuracy"


def load_trials(study_name, storage, tracking_uri=None):
    """One row per trial of `study_name`: Optuna's record joined with its MLflow run.

    Raises ValueError if the study does not exist or has no completed trial.
    """
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        frame = _trials_from_mlflow(study_name, tracking_uri) if tracking_uri else None
        if frame is None:
            raise ValueError(f"study {study_name!r} does not exist in {storage}"
                             + (f" nor as an MLflow experiment in {tracking_uri}" if tracking_uri else "")) from None
        if not (frame["state"] == "COMPLETE").any():
            raise ValueError(f"study {study_name!r} has no completed trial to report on")
        return frame
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise ValueError(f"study {study_name!r} has no completed trial to report on")
    frame = study.trials_dataframe(attrs=("number", "state", "values", "params", "user_attrs", "duration", "datetime_start"))
    frame = frame.rename(columns=lambda c: c.removeprefix("params_").removeprefix("user_attrs_"))
    frame = frame.rename(columns={"number": "trial", "values_0": ACCURACY, "value": ACCURACY, "latency_seconds": "latency_ms"})
    if "latency_ms" in frame:
        frame["latency_ms"] = frame["latency_ms"] * 1000
    frame["duration_s"] = frame.pop("duration").dt.total_seconds()
    frame.insert(0, "study", study_name)
    if "insertion" in frame:
        frame["insertion"] = frame["insertion"].fillna("none")
    if tracking_uri is not None and "mlflow_run_id" in frame:
        frame = _join_mlflow(frame, study_name, tracking_uri)
    for column in ("failure_reason", "seed", "run_url"):
        if column not in frame:
            frame[column] = np.nan
    return frame.drop(columns=[c for c in frame.columns if c.startswith("values_") or c == "outcome"])


def _trial_runs(study_name, tracking_uri):
    """The experiment's trial runs, and the base of links to them, or None if there is no such experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study_name)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], "tags.`harness.role` = 'trial'", max_results=50000)
    base = tracking_uri if tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    return runs, f"{base}/#/experiments/{experiment.experiment_id}/runs/"


def _trials_from_mlflow(study_name, tracking_uri):
    """A study searched by another engine (keras-tuner): its trials, read from its MLflow runs alone."""
    found = _trial_runs(study_name, tracking_uri)
    if not found or not found[0]:
        return None
    runs, link = found
    metrics = {"best_val_accuracy": ACCURACY, "test_accuracy": "test_accuracy", "flops": "flops",
               "total_params": "total_params", "trainable_params": "trainable_params",
               "latency_ms": "latency_ms", "train_seconds": "train_seconds"}
    rows = []
    for run in runs:
        tags, params = run.data.tags, run.data.params
        rows.append({
            "study": study_name,
            "trial": int(tags["optuna.trial_number"]),
            "state": tags.get("state"),
            **{column: run.data.metrics.get(metric) for metric, column in metrics.items()},
            # Params come back as strings; YAML reads them as the values they were (never evaluated).
            **{key: yaml.safe_load(value) for key, value in params.items() if key in PARAM_KEYS + ("dataset", "epochs")},
            "failure_reason": tags.get("failure_reason"),
            "mlflow_run_id": run.info.run_id,
            "run_url": link + run.info.run_id,
        })
    frame = pd.DataFrame(rows).sort_values("trial").reset_index(drop=True)
    if "insertion" in frame:
        frame["insertion"] = frame["insertion"].fillna("none")
    return frame


def _join_mlflow(frame, study_name, tracking_uri):
    found = _trial_runs(study_name, tracking_uri)
    if found is None:
        return frame
    runs, link = found
    records = pd.DataFrame(
        {
            "mlflow_run_id": run.info.run_id,
            "run_url": link + run.info.run_id,
            "seed_logged": pd.to_numeric(run.data.params.get("seed"), errors="coerce"),
            "trainable_params": run.data.metrics.get("trainable_params"),
            "test_accuracy_logged": run.data.metrics.get("test_accuracy"),
        }
        for run in runs
    )
    if records.empty:
        return frame
    frame = frame.merge(records, on="mlflow_run_id", how="left")
    for column in ("test_accuracy", "seed"):
        if column not in frame:
            frame[column] = np.nan
        frame[column] = frame[column].fillna(frame.pop(f"{column}_logged"))
    return frame


def completed(trials):
    return trials[trials["state"] == "COMPLETE"]


def best_trials(trials, n=10, metric=ACCURACY):
    columns = [c for c in ("study", "trial", metric, "test_accuracy", *COSTS, *CONFIG_COLUMNS) if c in trials]
    return completed(trials).sort_values(metric, ascending=False).head(n)[columns].reset_index(drop=True)


def by_dimension(trials, dimension, metric=ACCURACY):
    """Accuracy and cost for each value of `dimension`: mean, std, best and count."""
    done = completed(trials)
    if dimension not in done:
        return pd.DataFrame()
    table = done.groupby(dimension)[metric].agg(["mean", "std", "max", "count"]).rename(columns={"max": "best"})
    for cost in ("flops", "total_params"):
        if cost in done:
            table[f"mean {cost}"] = done.groupby(dimension)[cost].mean()
    return table.sort_values("best", ascending=False)


def pivot_best(trials, index, columns="function", metric=ACCURACY):
    done = completed(trials)
    if index not in done or columns not in done:
        return pd.DataFrame()
    return done.pivot_table(index=index, columns=columns, values=metric, aggfunc="max")


def baseline_deltas(trials, metric=ACCURACY):
    """Each expanded (insertion, function) against the baseline's mean: accuracy points and cost ratios."""
    done = completed(trials)
    baseline = done[done["insertion"] == "none"] if "insertion" in done else done.iloc[:0]
    expanded = done[done["insertion"] != "none"] if "insertion" in done else done.iloc[:0]
    if baseline.empty or expanded.empty:
        return pd.DataFrame()
    keys = [k for k in ("insertion", "function") if k in expanded]
    groups = expanded.groupby(keys)
    table = pd.DataFrame({"trials": groups.size(), metric: groups[metric].mean()})
    table["delta (points)"] = (table[metric] - baseline[metric].mean()) * 100
    for cost in COSTS:
        if cost in done and baseline[cost].notna().any():
            table[f"{cost} ratio"] = groups[cost].mean() / baseline[cost].mean()
    return table.sort_values("delta (points)", ascending=False)


def config_summary(trials, metric="test_accuracy", confidence=0.95):
    """Mean and confidence interval of `metric` per configuration run with several seeds."""
    done = completed(trials)
    keys = _configuration_keys(done)
    if metric not in done or not keys:
        return pd.DataFrame()
    groups = done.fillna({k: "-" for k in keys}).groupby(keys)[metric]
    table = groups.agg(["count", "mean", "std"]).reset_index()
    table = table[table["count"] > 1]
    if table.empty:
        return table
    half_width = stats.t.ppf(0.5 + confidence / 2, table["count"] - 1) * table["std"] / np.sqrt(table["count"])
    table["ci_low"], table["ci_high"] = table["mean"] - half_width, table["mean"] + half_width
    return table.sort_values("mean", ascending=False).reset_index(drop=True)


def _configuration_keys(trials):
    return [c for c in CONFIGURATION_KEYS if c in trials and trials[c].notna().any()]


def significance_vs_baseline(trials, metric="test_accuracy"):
    """Each configuration's seeds against the baseline's: difference in points and Welch's t-test."""
    done = completed(trials)
    keys = _configuration_keys(done)
    if metric not in done or "insertion" not in keys:
        return pd.DataFrame()
    done = done.fillna({k: "-" for k in keys})
    baseline = done.loc[done["insertion"] == "none", metric].to_numpy()
    rows = []
    for configuration, group in done[done["insertion"] != "none"].groupby(keys):
        values = group[metric].to_numpy()
        if len(values) < 2 or len(baseline) < 2:
            continue
        test = stats.ttest_ind(values, baseline, equal_var=False)
        rows.append({**dict(zip(keys, configuration)), "seeds": len(values), "mean": values.mean(),
                     "baseline mean": baseline.mean(), "delta (points)": (values.mean() - baseline.mean()) * 100,
                     "welch t": test.statistic, "p-value": test.pvalue})
    return pd.DataFrame(rows)


def pareto_front(trials, cost, metric=ACCURACY):
    """Completed trials that no other beats on both `metric` (higher) and `cost` (lower), by cost."""
    done = completed(trials).dropna(subset=[metric, cost])
    value, price = done[metric].to_numpy(), done[cost].to_numpy()
    no_worse = (price[None, :] <= price[:, None]) & (value[None, :] >= value[:, None])
    better = (price[None, :] < price[:, None]) | (value[None, :] > value[:, None])
    dominated = (no_worse & better).any(axis=1)
    columns = [c for c in ("study", "trial", metric, cost, "test_accuracy", *CONFIG_COLUMNS) if c in done]
    return done[~dominated].sort_values(cost)[columns].reset_index(drop=True)


def counts(trials):
    states = trials["state"].value_counts()
    return {state: int(states.get(state, 0)) for state in ("COMPLETE", "PRUNED", "FAIL")}


def verdict(trials, metric=ACCURACY):
    """A short statement of the best configuration against the baseline, in words."""
    done = completed(trials)
    best = done.loc[done[metric].idxmax()]
    described = ", ".join(f"{k}={_plain(best[k])}" for k in CONFIG_COLUMNS if k in best and pd.notna(best[k]))
    text = f"The best trial (#{int(best['trial'])}: {described}) reaches {best[metric]:.1%} validation accuracy"
    if pd.notna(best.get("test_accuracy")):
        text += f" ({best['test_accuracy']:.1%} on the test set)"
    baseline = done[done["insertion"] == "none"] if "insertion" in done else done.iloc[:0]
    if best.get("insertion") == "none":
        return text + ": it is the plain ReLU baseline, so no expansion beat it in this study."
    if baseline.empty:
        return text + ". The study ran no baseline (insertion none) to compare with."
    reference = baseline.loc[baseline[metric].idxmax()]
    delta = (best[metric] - reference[metric]) * 100
    ratio = best["flops"] / reference["flops"] if "flops" in best and reference.get("flops") else float("nan")
    direction = "above" if delta >= 0 else "below"
    return (
        text + f", {abs(delta):.1f} points {direction} the best baseline ({reference[metric]:.1%}) "
        f"at {ratio:.2f}x its FLOPs."
    )


def _plain(value):
    """6.0 -> 6 and 0.00246091 -> 0.00246: params read back from a table with gaps are floats."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else float(f"{value:.3g}")
    return value


def write_report(studies, storage, tracking_uri=None, out=None):
    """Write the report of one or more studies to `out` (default reports/<names>); return its path."""
    frames = [load_trials(name, storage, tracking_uri) for name in studies]  # raises before writing anything
    out = Path(out or Path("reports") / "-vs-".join(studies))
    from harness import report_pages

    with tempfile.TemporaryDirectory() as scratch:
        staging = Path(scratch) / "report"
        staging.mkdir()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report_pages.render(staging, studies, frames, storage, tracking_uri)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(out))
    return out
