"""The report's small tables over a study's trials (`loading.load_trials`), each a pandas DataFrame from one function.

Two kinds of rows feed them, told apart by the `stage` column:
- `search`: sampled trials, one seed each, ranked on validation accuracy. The
  best of many is biased upward, so these tables are labelled as selected.
- `confirm` and `benchmark`: fixed configurations re-trained with several seeds
  beside their baselines and judged on the test set; `comparisons` and
  `verdict` read these alone. (`pilot` rows sized a stage and are never tested.)
"""

import numpy as np
import pandas as pd
from scipy import stats

from harness.params import BASELINE_DEFAULTS, MODEL_KEYS, TRAINING_DEFAULTS, describe

DIMENSIONS = ("function", "order", "coefficients", "insertion", "mode")
COSTS = {"flops": "FLOPs", "total_params": "parameters", "latency_ms": "latency", "train_seconds": "train time"}
CONFIG_COLUMNS = MODEL_KEYS + tuple(TRAINING_DEFAULTS)
# What makes a configuration: everything but the seed, which repeats it.
CONFIGURATION_KEYS = tuple(c for c in CONFIG_COLUMNS if c != "seed")
ACCURACY = "val_accuracy"
SEEDED_STAGES = ("confirm", "benchmark")
DEFAULT_ROPE = 1.0  # points of accuracy: the margin of practical equivalence, unless `harness report --rope` says


def completed(trials):
    return trials[trials["state"] == "COMPLETE"]


def search_stage(trials):
    """The sampled search trials (all rows of a frame without stages)."""
    return trials[trials["stage"] == "search"] if "stage" in trials else trials


def seeded_stage(trials):
    """The confirmation and benchmark runs: fixed configurations with seeds, judged on the test set."""
    return trials[trials["stage"].isin(SEEDED_STAGES)] if "stage" in trials else trials.iloc[:0]


def best_trials(trials, n=10, metric=ACCURACY):
    columns = [c for c in ("study", "trial", metric, *COSTS, *CONFIG_COLUMNS) if c in trials]
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
    """Each expanded (insertion, function, width) against the baselines of the same width: accuracy points and cost ratios.

    Matching the width keeps the ratios about the expansion, not the network's
    size; groups with no baseline of their width are left out.
    """
    done = with_matched_keys(completed(trials))
    if "insertion" not in done:
        return pd.DataFrame()
    baseline = done[done["insertion"] == "none"]
    expanded = done[(done["insertion"] != "none") & done["width"].isin(baseline["width"])]
    if baseline.empty or expanded.empty:
        return pd.DataFrame()
    costs = [c for c in COSTS if c in done and baseline[c].notna().any()]
    reference = baseline.groupby("width")[[metric, *costs]].mean()
    groups = expanded.groupby([k for k in ("insertion", "function", "width") if k in expanded])
    table = pd.DataFrame({"trials": groups.size(), metric: groups[metric].mean()})
    widths = table.index.get_level_values("width")
    table["delta (points)"] = (table[metric] - reference.loc[widths, metric].to_numpy()) * 100
    for cost in costs:
        table[f"{cost} ratio"] = groups[cost].mean() / reference.loc[widths, cost].to_numpy()
    return table.sort_values("delta (points)", ascending=False)


def config_summary(trials, *, metric="test_accuracy", confidence=0.95):
    """Mean and confidence interval of `metric` per configuration run with several seeds."""
    done = completed(trials)
    keys = configuration_keys(done)
    if metric not in done or not keys:
        return pd.DataFrame()
    done, _ = one_run_per_seed(done, keys)
    groups = done.fillna({k: "-" for k in keys}).groupby(keys)[metric]
    table = groups.agg(["count", "mean", "std"]).reset_index()
    table = table[table["count"] > 1]
    if table.empty:
        return table
    with np.errstate(invalid="ignore"):  # a configuration whose seeds agree has no spread: its CI is its mean
        table["ci_low"], table["ci_high"] = stats.t.interval(
            confidence, table["count"] - 1, loc=table["mean"], scale=table["std"] / np.sqrt(table["count"])
        )
    return table.sort_values("mean", ascending=False).reset_index(drop=True)


def configuration_keys(trials):
    return [c for c in CONFIGURATION_KEYS if c in trials and trials[c].notna().any()]


def pareto_front(trials, cost, metric=ACCURACY):
    """Completed trials that no other beats on both `metric` (higher) and `cost` (lower), by cost."""
    done = completed(trials).dropna(subset=[metric, cost])
    value, price = done[metric].to_numpy(), done[cost].to_numpy()
    no_worse = (price[None, :] <= price[:, None]) & (value[None, :] >= value[:, None])
    better = (price[None, :] < price[:, None]) | (value[None, :] > value[:, None])
    dominated = (no_worse & better).any(axis=1)
    columns = [c for c in ("study", "trial", metric, cost, *CONFIG_COLUMNS) if c in done]
    return done[~dominated].sort_values(cost)[columns].reset_index(drop=True)


def counts(trials):
    states = trials["state"].value_counts()
    return {state: int(states.get(state, 0)) for state in ("COMPLETE", "PRUNED", "FAIL")}


def divergences(trials):
    """Diverged trials grouped by configuration and training recipe: how many of the group's trials diverged, out of
    how many, and where the first one went non-finite (its failure reason). Empty if none diverged."""
    reasons = trials["failure_reason"].fillna("") if "failure_reason" in trials else pd.Series("", index=trials.index)
    diverged = reasons.str.startswith("diverged")
    if not diverged.any():
        return pd.DataFrame()
    rows = list(with_matched_keys(trials).iterrows())  # the recipe's defaults filled in where a trial left them out
    frame = pd.DataFrame(
        {
            "configuration": [
                describe({k: plain(row[k]) for k in MODEL_KEYS if k in row and pd.notna(row[k])}) for _, row in rows
            ],
            "recipe": [
                f"{row['optimizer']} lr {plain(row['learning_rate'])}, decay {plain(row['weight_decay'])}, "
                f"{row['schedule']}" + (f", clip {plain(row['clip_norm'])}" if plain(row["clip_norm"]) else "")
                for _, row in rows
            ],
            "diverged": diverged,
            "reason": reasons.where(diverged),
        }
    )
    grouped = frame.groupby(["configuration", "recipe"])
    table = pd.DataFrame(
        {"diverged": grouped["diverged"].sum(), "trials": grouped.size(), "first divergence": grouped["reason"].first()}
    )
    return table[table["diverged"] > 0].sort_values("diverged", ascending=False).reset_index()


def plain(value):
    """6.0 -> 6 and 0.00246091 -> 0.00246: params read back from a table with gaps are floats."""
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return int(value) if value.is_integer() else float(f"{value:.3g}")
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def with_matched_keys(frame):
    """`frame` with what a matched baseline shares (backbone, width, the training recipe) filled with the defaults
    where a run left it out."""
    frame = frame.copy()
    for key, default in BASELINE_DEFAULTS.items():
        frame[key] = frame[key].fillna(default) if key in frame else default
    return frame


def one_run_per_seed(runs, keys):
    """(`runs` with one run per study, configuration and seed, the earliest trial's; how many were left out).

    Each seed must count once: a duplicate would pair many-to-many and narrow
    the CI. A run queued twice trains once, but older studies, or a benchmark
    run beside a confirmation, can still hold two.
    """
    if "seed" not in runs:
        return runs, 0
    subset = [k for k in ("study", *keys, "seed") if k in runs]
    kept = (
        runs.sort_values("trial").drop_duplicates(subset=subset, keep="first")
        if "trial" in runs
        else runs.drop_duplicates(subset=subset, keep="first")
    )
    return kept, len(runs) - len(kept)
