"""Each seeded configuration against its baselines, paired by seed: the numbers the verdict reads."""

import numpy as np
import pandas as pd

from harness.params import BASELINE_DEFAULTS, MODEL_KEYS, describe
from harness.reporting.tables import (
    DEFAULT_ROPE,
    completed,
    configuration_keys,
    one_run_per_seed,
    plain,
    seeded_stage,
    with_matched_keys,
)
from harness.statistics import NOT_TRAINED, equivalence_p, finding, holm, paired_test, power


def paired_comparisons(trials, *, metric="test_accuracy", confidence=0.95, rope=DEFAULT_ROPE, latency=None):
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
    inconclusive, or `NOT_TRAINED` where a paired run of either side did not train (`statistics.untrained`,
    the `untrained` column). Cost ratios are against the matched baseline alone, which differs only by the
    expansion; against a tuned one, both FLOPs are given as they are. FLOPs and parameter ratios are exact; the
    train-time ratio is the median of the per-seed ratios with their range; the latency ratio comes from
    `latency(params, baseline_params)` -> (median, low, high) if given (`latency_timer`), else is left out:
    latencies cached at different moments do not make a ratio.
    """
    seeded = seeded_stage(trials)
    done = with_matched_keys(completed(seeded))
    keys = configuration_keys(done)
    if done.empty or metric not in done or "insertion" not in keys:
        return pd.DataFrame()
    done = done.fillna({k: "-" for k in keys})
    shared = list(BASELINE_DEFAULTS)
    baselines = done[done["insertion"] == "none"]
    tuned = baselines[baselines["tuned_baseline"].eq(True)] if "tuned_baseline" in baselines else baselines.iloc[:0]
    failed = with_matched_keys(seeded[seeded["state"] != "COMPLETE"])
    rows = []
    groups = list(done[done["insertion"] != "none"].groupby(keys))
    configurations = [{k: plain(v) for k, v in zip(keys, values) if v != "-"} for values, _ in groups]
    for (_, group), configuration, name in zip(groups, configurations, configuration_names(configurations)):
        matched = baselines[(baselines[shared] == group[shared].iloc[0]).all(axis=1)]
        for label, baseline in _references(matched, tuned, shared):
            row = _compared(group, baseline, keys, metric, confidence, rope, ratios=label != TUNED)
            if row is None:
                continue
            recipe = {k: plain(baseline[k].iloc[0]) for k in shared}
            if latency is not None and label != TUNED:
                ratio = latency(configuration, {**recipe, "insertion": "none"})
                row["latency_ms ratio"], row["latency_ms ratio low"], row["latency_ms ratio high"] = ratio
            rows.append(
                {
                    "configuration": name,
                    "baseline": label,
                    **recipe,
                    "failed runs": int(_matches(failed, configuration).sum()) if not failed.empty else 0,
                    **row,
                }
            )
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    if not table["duplicates left out"].any():
        table = table.drop(columns="duplicates left out")
    table.insert(table.columns.get_loc("p-value") + 1, "p (Holm)", holm(table["p-value"]))
    table.insert(table.columns.get_loc("p equivalent") + 1, "p equivalent (Holm)", holm(table["p equivalent"]))
    table["finding"] = [
        NOT_TRAINED
        if row["untrained runs"]
        else finding(row["ci low"], row["ci high"], row["p (Holm)"], row["p equivalent (Holm)"], rope)
        for _, row in table.iterrows()
    ]
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
        if len(same) < 2:
            continue
        differing = [k for k in dict.fromkeys(k for c in same for k in c) if len({repr(c.get(k)) for c in same}) > 1]
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


def _compared(group, baseline, keys, metric, confidence, rope, ratios=True):
    """The columns of one comparison of a configuration's runs (`group`) with a baseline's, paired by seed; None
    if no seed has both. Cost `ratios` where the baseline differs only by the expansion, else FLOPs as they are."""
    (group, duplicates), (baseline, baseline_duplicates) = (
        one_run_per_seed(group, keys),
        one_run_per_seed(baseline, keys),
    )
    pairs = group.merge(baseline, on="seed", suffixes=("", " baseline"))
    if pairs.empty:
        return None
    values, reference = pairs[metric].to_numpy() * 100, pairs[f"{metric} baseline"].to_numpy() * 100
    delta, low, high, p_value = paired_test(values, reference, confidence)
    detectable, seeds_to_settle = power(values - reference, rope)
    row = {
        "seeds": len(pairs),
        "duplicates left out": duplicates + baseline_duplicates,
        "untrained runs": int(pairs["untrained"].sum() + pairs["untrained baseline"].sum())
        if "untrained" in pairs
        else 0,
        "accuracy": pairs[metric].mean(),
        "baseline accuracy": pairs[f"{metric} baseline"].mean(),
        "delta (points)": delta,
        "ci low": low,
        "ci high": high,
        "p-value": p_value,
        "p equivalent": equivalence_p(values, reference, rope),
        "detectable (points)": detectable,
        "seeds to settle": seeds_to_settle,
    }
    if "flops" in pairs:  # the same for every seed
        row["flops"], row["baseline flops"] = pairs["flops"].mean(), pairs["flops baseline"].mean()
    if not ratios:
        return row
    for cost in ("flops", "total_params"):  # a ratio of means
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
        models = [
            build_model({k: v for k, v in p.items() if k in MODEL_KEYS}, tuple(input_shape), int(num_classes))
            for p in (params, baseline_params)
        ]
        return latency_ratio(*models, images, rounds=rounds)

    return latency


def _matches(frame, configuration):
    frame = frame.fillna({k: "-" for k in configuration if k in frame})
    return np.logical_and.reduce([frame[k] == v for k, v in configuration.items() if k in frame])
