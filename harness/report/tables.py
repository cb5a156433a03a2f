"""Reports: does a Taylor expansion pay for its cost, and which one?

Every table is a pandas DataFrame from a small function, so the report can be
rebuilt, or taken apart, from Python; `report_pages` lays them out. Two kinds
of rows feed them, told apart by the `stage` column:
- `search`: sampled trials, one seed each, ranked on validation accuracy. The
  best of many is biased upward, so these tables are labelled as selected.
- `confirm` and `benchmark`: fixed configurations re-trained with several seeds
  beside their matched baselines and judged on the test set. The verdict
  (`paired_comparisons`, `verdict`) comes from these alone.
"""

import math

import numpy as np
import optuna
import pandas as pd
import yaml
from scipy import stats

from harness.params import BASELINE_DEFAULTS, MODEL_KEYS, PARAM_KEYS, TRAINING_DEFAULTS, describe
from harness.redaction import redact
from harness.statistics import MAX_SEEDS, equivalence_p, finding, holm, paired_test, power
from harness.study.records import CONFIRM_SUFFIX, PILOT, SURPLUS, TUNED_BASELINE, enqueued_params
from harness.study.storage import open_storage

DIMENSIONS = ("function", "order", "coefficients", "insertion", "mode")
COSTS = {"flops": "FLOPs", "total_params": "parameters", "latency_ms": "latency", "train_seconds": "train time"}
CONFIG_COLUMNS = MODEL_KEYS + tuple(TRAINING_DEFAULTS)
# What makes a configuration: everything but the seed, which repeats it.
CONFIGURATION_KEYS = tuple(c for c in CONFIG_COLUMNS if c != "seed")
ACCURACY = "val_accuracy"
SEEDED_STAGES = ("confirm", "benchmark")
DEFAULT_ROPE = 1.0  # points of accuracy: the margin of practical equivalence, unless `harness report --rope` says


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
            raise ValueError(f"study {study_name!r} does not exist in {redact(storage)}"
                             + (f" nor as an MLflow experiment in {redact(tracking_uri)}" if tracking_uri else "")) from None
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
    frame = study.trials_dataframe(attrs=("number", "state", "values", "params", "user_attrs", "duration", "datetime_start"))
    tuned = study.user_attrs.get(TUNED_BASELINE)
    if tuned is not None:  # a confirmation's runs of the search's best baseline
        frame[TUNED_BASELINE] = [{k: v for k, v in enqueued_params(t).items() if k != "seed"} == tuned
                                 for t in study.get_trials(deepcopy=False)]
    surplus = f"user_attrs_{SURPLUS}"
    if surplus in frame:  # asked for once the study was full: never trained
        frame = frame[~frame.pop(surplus).eq(True)]
    stage = study.user_attrs.get("stage", "search")
    pilot = frame.pop(f"user_attrs_{PILOT}").eq(True) if f"user_attrs_{PILOT}" in frame else np.zeros(len(frame), bool)
    frame = frame.rename(columns=lambda c: c.removeprefix("params_").removeprefix("user_attrs_"))
    # The first objective is `value`, `values_0`, or `values_val_accuracy` once the study names its metrics.
    frame = frame.rename(columns={"number": "trial", "values_0": ACCURACY, "value": ACCURACY, f"values_{ACCURACY}": ACCURACY,
                                  "latency_seconds": "latency_ms"})
    # A sampled trial keeps its params as params, an enqueued one (the baseline) as user attrs: one column each.
    frame = frame.T.groupby(level=0, sort=False).first().T.infer_objects()
    if "latency_ms" in frame:
        frame["latency_ms"] = frame["latency_ms"] * 1000
    frame["duration_s"] = frame.pop("duration").dt.total_seconds()
    frame.insert(0, "stage", np.where(pilot, "pilot", stage))  # a pilot's runs size a stage and are not tested
    frame.insert(0, "study", study_name)
    if "insertion" in frame:
        frame["insertion"] = frame["insertion"].fillna("none")
    if runs is not None and "mlflow_run_id" in frame:
        frame = _join_mlflow(frame, runs)
    drop = [c for c in frame.columns if c.startswith("values_") or c in ("outcome", "benchmark", "baseline", "baseline_turn")]
    return frame.drop(columns=drop)


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
    metrics = {"best_val_accuracy": ACCURACY, "test_accuracy": "test_accuracy", "flops": "flops",
               "total_params": "total_params", "trainable_params": "trainable_params",
               "latency_ms": "latency_ms", "train_seconds": "train_seconds"}
    rows = []
    for run in runs:
        tags, params = run.data.tags, run.data.params
        rows.append({
            "study": study_name,
            "stage": tags.get("harness.stage", "search"),
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


def _join_mlflow(frame, found):
    runs, link = found
    # Optuna keeps a trial's accuracy and FLOPs; its other costs live in its MLflow run.
    logged = ("test_accuracy", "total_params", "trainable_params", "latency_ms", "train_seconds")
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


def completed(trials):
    return trials[trials["state"] == "COMPLETE"]


def search_stage(trials):
    """The sampled search trials (all rows of a frame without stages)."""
    return trials[trials["stage"] == "search"] if "stage" in trials else trials


def seeded_stage(trials):
    """The confirmation and benchmark runs: fixed configurations with seeds, judged on the test set."""
    return trials[trials["stage"].isin(SEEDED_STAGES)] if "stage" in trials else trials.iloc[:0]


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


def _with_matched_keys(frame):
    """`frame` with what a matched baseline shares (backbone, width, the training recipe) filled with the defaults
    where a run left it out."""
    frame = frame.copy()
    for key, default in BASELINE_DEFAULTS.items():
        frame[key] = frame[key].fillna(default) if key in frame else default
    return frame


def baseline_deltas(trials, metric=ACCURACY):
    """Each expanded (insertion, function, width) against the baselines of the same width: accuracy points and cost ratios.

    Matching the width keeps the ratios about the expansion, not the network's
    size; groups with no baseline of their width are left out.
    """
    done = _with_matched_keys(completed(trials))
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


def config_summary(trials, metric="test_accuracy", confidence=0.95):
    """Mean and confidence interval of `metric` per configuration run with several seeds."""
    done = completed(trials)
    keys = _configuration_keys(done)
    if metric not in done or not keys:
        return pd.DataFrame()
    done, _ = one_run_per_seed(done, keys)
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


def one_run_per_seed(runs, keys):
    """(`runs` with one run per study, configuration and seed, the earliest trial's; how many were left out).

    Each seed must count once: a duplicate would pair many-to-many and narrow
    the CI. A run queued twice trains once, but older studies, or a benchmark
    run beside a confirmation, can still hold two.
    """
    if "seed" not in runs:
        return runs, 0
    subset = [k for k in ("study", *keys, "seed") if k in runs]
    kept = runs.sort_values("trial").drop_duplicates(subset=subset, keep="first") if "trial" in runs else \
        runs.drop_duplicates(subset=subset, keep="first")
    return kept, len(runs) - len(kept)


def paired_comparisons(trials, metric="test_accuracy", confidence=0.95, rope=DEFAULT_ROPE, latency=None):
    """Each seeded configuration against its baselines, paired by seed.

    Its *matched* baseline is the plain network run with the same backbone,
    width, training recipe and seeds: everything but the expansion, so the
    difference is the expansion's. Its *tuned* baseline, where a confirmed
    search has one, is the plain network with the hyperparameters its own search
    trials found best: what a practitioner would otherwise use. Where the two
    are one network, one row says "matched = tuned".

    Per comparison: the difference in `metric` in points with its t-based CI
    over the seeds both completed, the paired t-test's p-value and the paired
    TOST's against +-`rope` points, each Holm-adjusted over every comparison
    of the table, the smallest difference the seeds could detect and the seeds
    that would settle it (`statistics.power`), cost ratios, and a finding
    (`statistics.finding`): pays off, costs accuracy, equivalent, or
    inconclusive. FLOPs and parameter ratios are exact; the train-time ratio is the median of the per-seed ratios
    with their range; the latency ratio comes from `latency(params,
    baseline_params)` -> (median, low, high) if given (`latency_timer`), else
    is left out: latencies cached at different moments do not make a ratio.
    """
    seeded = seeded_stage(trials)
    done = _with_matched_keys(completed(seeded))
    keys = _configuration_keys(done)
    if done.empty or metric not in done or "insertion" not in keys:
        return pd.DataFrame()
    done = done.fillna({k: "-" for k in keys})
    shared = list(BASELINE_DEFAULTS)
    baselines = done[done["insertion"] == "none"]
    tuned = baselines[baselines["tuned_baseline"].eq(True)] if "tuned_baseline" in baselines else baselines.iloc[:0]
    failed = _with_matched_keys(seeded[seeded["state"] != "COMPLETE"])
    rows = []
    groups = list(done[done["insertion"] != "none"].groupby(keys))
    names = configuration_names([{k: plain(v) for k, v in zip(keys, values) if v != "-"} for values, _ in groups])
    for (values, group), name in zip(groups, names):
        configuration = {k: plain(v) for k, v in zip(keys, values) if v != "-"}
        matched = baselines[(baselines[shared] == group[shared].iloc[0]).all(axis=1)]
        for label, baseline in _references(matched, tuned, shared):
            row = _compared(group, baseline, keys, metric, confidence, rope)
            if row is None:
                continue
            recipe = {k: plain(baseline[k].iloc[0]) for k in shared}
            if latency is not None:
                ratio = latency(configuration, {**recipe, "insertion": "none"})
                row["latency_ms ratio"], row["latency_ms ratio low"], row["latency_ms ratio high"] = ratio
            rows.append({"configuration": name, "baseline": label, **recipe,
                         "failed runs": int(_matches(failed, configuration).sum()) if not failed.empty else 0, **row})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    if not table["duplicates left out"].any():
        table = table.drop(columns="duplicates left out")
    table.insert(table.columns.get_loc("p-value") + 1, "p (Holm)", holm(table["p-value"]))
    table.insert(table.columns.get_loc("p equivalent") + 1, "p equivalent (Holm)", holm(table["p equivalent"]))
    table["finding"] = [finding(row["ci low"], row["ci high"], row["p (Holm)"], row["p equivalent (Holm)"], rope)
                        for _, row in table.iterrows()]
    # A configuration's comparisons together, matched first; configurations by their best difference.
    best = table.groupby("configuration")["delta (points)"].transform("max")
    tuned_last = table["baseline"].eq(TUNED)
    order = np.lexsort((tuned_last, table["configuration"].to_numpy(dtype=str), -best.fillna(-np.inf)))
    return table.iloc[order].reset_index(drop=True)


MATCHED, TUNED, ONE_BASELINE = "matched", "tuned", "matched = tuned"


def configuration_names(configurations):
    """Each configuration described in words (`describe`), with the params that tell apart those whose words
    are the same (two learning rates of one expansion: 'conv1 sin p2 (learning_rate=0.00174, batch_size=64)')."""
    names = [describe(c) for c in configurations]
    for name in set(names):
        same = [c for c, n in zip(configurations, names) if n == name]
        differing = [k for k in dict.fromkeys(k for c in same for k in c) if len({repr(c.get(k)) for c in same}) > 1]
        if len(same) > 1:
            for index in (i for i, n in enumerate(names) if n == name):
                shown = ", ".join(f"{k}={configurations[index].get(k)}" for k in differing)
                names[index] = f"{name} ({shown})"
    return names


def _references(matched, tuned, shared):
    """(label, runs) of the baselines a configuration is compared with: its matched one, and the tuned one where
    there is one and it is another network."""
    if tuned.empty:
        return [(MATCHED, matched)]
    if not matched.empty and (matched[shared].iloc[0] == tuned[shared].iloc[0]).all():
        return [(ONE_BASELINE, matched)]
    return [(MATCHED, matched), (TUNED, tuned)]


def _compared(group, baseline, keys, metric, confidence, rope):
    """The columns of one comparison of a configuration's runs (`group`) with a baseline's, paired by seed; None
    if no seed has both."""
    (group, duplicates), (baseline, baseline_duplicates) = one_run_per_seed(group, keys), one_run_per_seed(baseline, keys)
    pairs = group.merge(baseline, on="seed", suffixes=("", " baseline"))
    if pairs.empty:
        return None
    values, reference = pairs[metric].to_numpy() * 100, pairs[f"{metric} baseline"].to_numpy() * 100
    delta, low, high, p_value = paired_test(values, reference, confidence)
    detectable, seeds_to_settle = power(values - reference, rope)
    row = {
        "seeds": len(pairs),
        "duplicates left out": duplicates + baseline_duplicates,
        "accuracy": pairs[metric].mean(),
        "baseline accuracy": pairs[f"{metric} baseline"].mean(),
        "delta (points)": delta, "ci low": low, "ci high": high, "p-value": p_value,
        "p equivalent": equivalence_p(values, reference, rope),
        "detectable (points)": detectable, "seeds to settle": seeds_to_settle,
    }
    for cost in ("flops", "total_params"):  # the same for every seed: a ratio of means
        if cost in pairs and pairs[f"{cost} baseline"].notna().any():
            row[f"{cost} ratio"] = pairs[cost].mean() / pairs[f"{cost} baseline"].mean()
    if "train_seconds" in pairs and pairs["train_seconds baseline"].notna().any():
        ratios = (pairs["train_seconds"] / pairs["train_seconds baseline"]).dropna()
        row["train_seconds ratio"] = ratios.median()
        row["train_seconds ratio low"], row["train_seconds ratio high"] = ratios.min(), ratios.max()
    return row


LATENCY_ROUNDS = 15


def latency_timer(input_shape, num_classes, rounds=LATENCY_ROUNDS):
    """`latency(params, baseline_params)` for `paired_comparisons`: both networks built for `input_shape` and
    timed interleaved in this process (`costs.latency_ratio`), so the ratio sees one machine at one moment."""
    from harness.model import build_model
    from harness.training.costs import latency_ratio

    images = np.random.default_rng(0).random((256, *input_shape), dtype=np.float32)

    def latency(params, baseline_params):
        models = [build_model({k: v for k, v in p.items() if k in MODEL_KEYS}, tuple(input_shape), int(num_classes))
                  for p in (params, baseline_params)]
        return latency_ratio(*models, images, rounds=rounds)

    return latency


def _matches(frame, configuration):
    frame = frame.fillna({k: "-" for k in configuration if k in frame})
    return np.logical_and.reduce([frame[k] == v for k, v in configuration.items() if k in frame])


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


def verdict(trials, confirm_command=None, metric=ACCURACY, rope=DEFAULT_ROPE, comparisons=None):
    """The answer in words: one sentence per confirmed comparison, else the search's best, flagged as optimistic.

    `confirm_command` is shown to a study that has no confirmation runs; `rope` is the margin of practical
    equivalence in points; `comparisons` is `paired_comparisons(trials, rope=rope)` where the caller has it.
    """
    comparisons = paired_comparisons(trials, rope=rope) if comparisons is None else comparisons
    if not comparisons.empty:
        return [_seeded_intro(trials, comparisons, rope), *(_confirmed_sentence(row, rope) for _, row in comparisons.iterrows())]
    done = completed(search_stage(trials))
    if done.empty:  # seeded runs alone, and no expanded configuration among those that completed
        seeded = seeded_stage(trials)
        expanded = seeded[seeded["insertion"] != "none"] if "insertion" in seeded else seeded.iloc[:0]
        if not completed(expanded).empty:
            return ["No seeded configuration has a completed matched baseline run with the same seeds to pair with, so "
                    "there is no verdict."]
        reasons = sorted(set(expanded["failure_reason"].dropna())) if "failure_reason" in expanded else []
        return [f"No expanded configuration completed ({len(expanded)} seeded run(s), none complete), so there is "
                "nothing to compare with the baseline." + (f" Reasons: {'; '.join(reasons[:3])}." if reasons else "")]
    best = done.loc[done[metric].idxmax()]
    described = describe({k: plain(best[k]) for k in MODEL_KEYS if k in best and pd.notna(best[k])})
    text = (f"Selected on validation, so optimistic: the best of {len(done)} completed search trials "
            f"(#{int(best['trial'])}, {described}) reaches {best[metric]:.1%} validation accuracy")
    if pd.notna(best.get("test_accuracy")):
        text += f" ({best['test_accuracy']:.1%} on the test set)"
    text += ". Picked as the best of many on a small validation set with one seed each, it is biased upward (the winner's curse)."
    lines = [text]
    if confirm_command:
        lines.append(f"No configuration was confirmed with seeds on held-out data. Confirm the best: {confirm_command}")
    return lines


def _seeded_intro(trials, comparisons, rope):
    """What the seeded comparisons rest on: runs, baselines and how they were tuned, what each seed varied, the
    margin and the tests."""
    seeded = seeded_stage(trials)
    configurations = comparisons["configuration"].nunique()
    text = (f"From {len(seeded)} seeded runs judged on the test set: {configurations} configuration(s), each re-trained "
            f"with {seeded['seed'].nunique()} seeds beside its matched baseline: the plain network with the same "
            "backbone, width, training recipe, epochs and seeds, everything but the expansion.")
    searched = search_stage(trials)
    baseline_trials = int((searched["insertion"] == "none").sum()) if "insertion" in searched else 0
    if comparisons["baseline"].isin([TUNED, ONE_BASELINE]).any():
        text += (f" The tuned baseline is the plain network with the hyperparameters that did best (on validation) "
                 f"among the baseline's {baseline_trials} search trial(s), against {len(searched) - baseline_trials} "
                 "search trial(s) of expanded networks; it is re-trained with the same seeds.")
        if (comparisons["baseline"] == ONE_BASELINE).all():
            text += (" Its hyperparameters are the matched baseline's (the space searches none that the baseline "
                     "shares, or the best were the defaults), so the two are one network, trained once.")
    pilot = trials[trials["stage"] == "pilot"] if "stage" in trials else trials.iloc[:0]
    if not pilot.empty:
        text += (f" The seeds were sized by a pilot of {pilot['seed'].nunique()} other seeds (`--seeds auto`: enough to "
                 "detect a difference of the margin with 80% power at 0.05 over the comparisons, from the pilot's "
                 "spread); the pilot's runs are not tested, so the sizing leaves the tests at their 5% level.")
    text += " " + variance_sources(seeded)
    text += (f" Differences within +-{rope:g} point(s) count as practically none (the margin of practical equivalence, "
             "`harness report --rope`); each finding needs its test (paired t, or paired TOST for equivalence) below "
             f"0.05 once Holm-adjusted over the {len(comparisons)} comparisons.")
    if "duplicates left out" in comparisons:
        text += (f" {int(comparisons['duplicates left out'].sum())} duplicate run(s) of a configuration and seed "
                 "were left out: each seed counts once, with its earliest run.")
    return text


def variance_sources(runs):
    """Which sources of variance `runs`' seeds covered, in a sentence."""
    varied = ["the initialisation", "the order of the training data", "dropout (where the network has it)"]
    if "augment" in runs and runs["augment"].fillna("none").ne("none").any():
        varied.append("the augmentation")
    redrawn = "vary_split" in runs and runs["vary_split"].eq(True).any()
    if redrawn:
        varied.append("the train/validation split (--vary-split)")
    return (f"Each seed varied {', '.join(varied[:-1])} and {varied[-1]}; the test set was the same for every run"
            + ("." if redrawn else ", and so was the train/validation split (--vary-split redraws it per seed)."))


BASELINE_WORDS = {MATCHED: "its matched baseline", TUNED: "the tuned baseline",
                  ONE_BASELINE: "its baseline (matched and tuned: one network)"}


def _confirmed_sentence(row, rope):
    if pd.notna(row["ci low"]):
        ci = f"95% CI {row['ci low']:+.1f} to {row['ci high']:+.1f}"
    elif row["seeds"] >= 2:
        ci = "no CI: every seed gave the same difference, which says nothing of its spread; more seeds or a larger test set would"
    else:
        ci = "no CI from one seed"
    p_holm = f"Holm-adjusted p = {row['p (Holm)']:.3g}" if pd.notna(row["p (Holm)"]) else "no p-value"
    if pd.notna(row["p equivalent (Holm)"]):
        p_holm += f", equivalence p = {row['p equivalent (Holm)']:.3g}"
    statement = {
        "pays off": "pays off",
        "pays off, by less than the margin": f"pays off, by less than the +-{rope:g}-point margin",
        "costs accuracy": "costs accuracy",
        "costs accuracy, by less than the margin": f"costs accuracy, by less than the +-{rope:g}-point margin",
        "equivalent": f"is equivalent to it within +-{rope:g} point(s)",
        "inconclusive": "is inconclusive at this budget",
    }[row["finding"]]
    if row["finding"] == "inconclusive" and (row["ci low"] > 0 or row["ci high"] < 0):
        statement += " once corrected for the comparisons made (Holm)"
    power = ""
    if pd.notna(row["detectable (points)"]):
        power = (f" These {row['seeds']} seeds detect a difference of {row['detectable (points)']:.1f} points with 80% "
                 "power at the 5% level (from the spread of the paired differences)")
        if row["finding"] == "inconclusive":
            power += ("; settling it would take about " + (f"{row['seeds to settle']:g} seeds" if math.isfinite(
                row["seeds to settle"]) else f"more than {MAX_SEEDS} seeds"))
        power += "."
    return (f"{row['configuration']} against {BASELINE_WORDS[row['baseline']]} {statement}: {row['delta (points)']:+.1f} "
            f"points of test accuracy ({ci}; paired over {row['seeds']} seeds; {p_holm}), {row['accuracy']:.1%} against "
            f"{row['baseline accuracy']:.1%}, at {cost_words(row)}.{power} The baseline: {baseline_words(row)}.")


def cost_words(row):
    """A comparison's cost ratios in words, each saying how it was measured."""
    words = [f"{row[f'{cost} ratio']:.2f}x its {name}" for cost, name in (("flops", "FLOPs"), ("total_params", "parameters"))
             if pd.notna(row.get(f"{cost} ratio"))]
    for cost, how in (("latency_ms", f"{LATENCY_ROUNDS} interleaved rounds timed by this report"),
                      ("train_seconds", f"{row['seeds']} per-seed ratios")):
        if pd.notna(row.get(f"{cost} ratio")):
            words.append(f"{row[f'{cost} ratio']:.2f}x its {COSTS[cost]} (median of {how}, {row[f'{cost} ratio low']:.2f} "
                         f"to {row[f'{cost} ratio high']:.2f}" + ("; wall clock on the machine that trained them)"
                                                                  if cost == "train_seconds" else ")"))
    return ", ".join(words) or "no cost measured"


def baseline_words(row):
    """What a matched baseline shares with its configuration, in words: 'seed_cnn at width 1, adam at learning rate
    0.001 (constant), batch size 64, no augmentation'."""
    words = [f"{row['backbone']} at width {row['width']:g}", f"{row['optimizer']} at learning rate {row['learning_rate']:.3g} "
             f"({row['schedule']}" + (f", warm-up {row['warmup_epochs']:g} epoch(s))" if row["warmup_epochs"] else ")")]
    if row["weight_decay"]:
        words.append(f"weight decay {row['weight_decay']:.3g}")
    if row["label_smoothing"]:
        words.append(f"label smoothing {row['label_smoothing']:g}")
    words += [f"batch size {row['batch_size']:g}", "no augmentation" if row["augment"] == "none" else f"{row['augment']} augmentation"]
    return ", ".join(words)


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
