"""The answer in words: a sentence per comparison, and what the comparisons rest on."""

import math

import pandas as pd

from harness.params import MODEL_KEYS, describe
from harness.report.comparisons import MATCHED, ONE_BASELINE, TUNED, LATENCY_ROUNDS, paired_comparisons
from harness.report.tables import ACCURACY, COSTS, DEFAULT_ROPE, completed, plain, search_stage, seeded_stage
from harness.statistics import MAX_SEEDS


def verdict(trials, *, confirm_command=None, metric=ACCURACY, rope=DEFAULT_ROPE, comparisons=None):
    """The answer in words: one sentence per confirmed comparison, else the search's best, flagged as optimistic.

    `confirm_command` is shown to a study that has no confirmation runs; `rope` is the margin of practical
    equivalence in points; `comparisons` is `paired_comparisons(trials, rope=rope)` where the caller has it.
    """
    comparisons = paired_comparisons(trials, rope=rope) if comparisons is None else comparisons
    if not comparisons.empty:
        return [
            _seeded_intro(trials, comparisons, rope),
            *(_confirmed_sentence(row, rope) for _, row in comparisons.iterrows()),
        ]
    done = completed(search_stage(trials))
    if done.empty:  # seeded runs alone, and no expanded configuration among those that completed
        seeded = seeded_stage(trials)
        expanded = seeded[seeded["insertion"] != "none"] if "insertion" in seeded else seeded.iloc[:0]
        if not completed(expanded).empty:
            return [
                "No seeded configuration has a completed matched baseline run with the same seeds to pair with, so "
                "there is no verdict."
            ]
        reasons = sorted(set(expanded["failure_reason"].dropna())) if "failure_reason" in expanded else []
        return [
            f"No expanded configuration completed ({len(expanded)} seeded run(s), none complete), so there is "
            "nothing to compare with the baseline." + (f" Reasons: {'; '.join(reasons[:3])}." if reasons else "")
        ]
    best = done.loc[done[metric].idxmax()]
    described = describe({k: plain(best[k]) for k in MODEL_KEYS if k in best and pd.notna(best[k])})
    text = (
        f"Selected on validation, so optimistic: the best of {len(done)} completed search trials "
        f"(#{int(best['trial'])}, {described}) reaches {best[metric]:.1%} validation accuracy"
    )
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
    text = (
        f"From {len(seeded)} seeded runs judged on the test set: {configurations} configuration(s), each re-trained "
        f"with {seeded['seed'].nunique()} seeds beside its matched baseline: the plain network with the same "
        "backbone, width, training recipe, epochs and seeds, everything but the expansion."
    )
    searched = search_stage(trials)
    baseline_trials = int((searched["insertion"] == "none").sum()) if "insertion" in searched else 0
    if comparisons["baseline"].isin([TUNED, ONE_BASELINE]).any():
        text += (
            f" The tuned baseline is the plain network with the hyperparameters that did best (on validation) "
            f"among the baseline's {baseline_trials} search trial(s), against {len(searched) - baseline_trials} "
            "search trial(s) of expanded networks; it is re-trained with the same seeds."
        )
        if (comparisons["baseline"] == ONE_BASELINE).all():
            text += (
                " Its hyperparameters are the matched baseline's (the space searches none that the baseline "
                "shares, or the best were the defaults), so the two are one network, trained once."
            )
    pilot = trials[trials["stage"] == "pilot"] if "stage" in trials else trials.iloc[:0]
    if not pilot.empty:
        text += (
            f" The seeds were sized by a pilot of {pilot['seed'].nunique()} other seeds (`--seeds auto`: enough to "
            "detect a difference of the margin with 80% power at 0.05 over the comparisons, from the pilot's "
            "spread); the pilot's runs are not tested, so the sizing leaves the tests at their 5% level."
        )
    text += " " + variance_sources(seeded)
    text += (
        f" Differences within +-{rope:g} point(s) count as practically none (the margin of practical equivalence, "
        "`harness report --rope`); each finding needs its test (paired t, or paired TOST for equivalence) below "
        f"0.05 once Holm-adjusted over the {len(comparisons)} comparisons."
    )
    if "duplicates left out" in comparisons:
        text += (
            f" {int(comparisons['duplicates left out'].sum())} duplicate run(s) of a configuration and seed "
            "were left out: each seed counts once, with its earliest run."
        )
    return text


def variance_sources(runs):
    """Which sources of variance `runs`' seeds covered, in a sentence."""
    varied = ["the initialisation", "the order of the training data", "dropout (where the network has it)"]
    if "augment" in runs and runs["augment"].fillna("none").ne("none").any():
        varied.append("the augmentation")
    redrawn = "vary_split" in runs and runs["vary_split"].eq(True).any()
    if redrawn:
        varied.append("the train/validation split (--vary-split)")
    return f"Each seed varied {', '.join(varied[:-1])} and {varied[-1]}; the test set was the same for every run" + (
        "." if redrawn else ", and so was the train/validation split (--vary-split redraws it per seed)."
    )


BASELINE_WORDS = {
    MATCHED: "its matched baseline",
    TUNED: "the tuned baseline",
    ONE_BASELINE: "its baseline (matched and tuned: one network)",
}


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
        power = (
            f" These {row['seeds']} seeds detect a difference of {row['detectable (points)']:.1f} points with 80% "
            "power at the 5% level (from the spread of the paired differences)"
        )
        if row["finding"] == "inconclusive":
            power += "; settling it would take about " + (
                f"{row['seeds to settle']:g} seeds"
                if math.isfinite(row["seeds to settle"])
                else f"more than {MAX_SEEDS} seeds"
            )
        power += "."
    return (
        f"{row['configuration']} against {BASELINE_WORDS[row['baseline']]} {statement}: {row['delta (points)']:+.1f} "
        f"points of test accuracy ({ci}; paired over {row['seeds']} seeds; {p_holm}), {row['accuracy']:.1%} against "
        f"{row['baseline accuracy']:.1%}, at {cost_words(row)}.{power} The baseline: {baseline_words(row)}."
    )


def cost_words(row):
    """A comparison's cost ratios in words, each saying how it was measured."""
    words = [
        f"{row[f'{cost} ratio']:.2f}x its {name}"
        for cost, name in (("flops", "FLOPs"), ("total_params", "parameters"))
        if pd.notna(row.get(f"{cost} ratio"))
    ]
    for cost, how in (
        ("latency_ms", f"{LATENCY_ROUNDS} interleaved rounds timed by this report"),
        ("train_seconds", f"{row['seeds']} per-seed ratios"),
    ):
        if pd.notna(row.get(f"{cost} ratio")):
            words.append(
                f"{row[f'{cost} ratio']:.2f}x its {COSTS[cost]} (median of {how}, {row[f'{cost} ratio low']:.2f} "
                f"to {row[f'{cost} ratio high']:.2f}"
                + ("; wall clock on the machine that trained them)" if cost == "train_seconds" else ")")
            )
    return ", ".join(words) or "no cost measured"


def baseline_words(row):
    """What a matched baseline shares with its configuration, in words: 'seed_cnn at width 1, adam at learning rate
    0.001 (constant), batch size 64, no augmentation'."""
    words = [
        f"{row['backbone']} at width {row['width']:g}",
        f"{row['optimizer']} at learning rate {row['learning_rate']:.3g} "
        f"({row['schedule']}" + (f", warm-up {row['warmup_epochs']:g} epoch(s))" if row["warmup_epochs"] else ")"),
    ]
    if row["weight_decay"]:
        words.append(f"weight decay {row['weight_decay']:.3g}")
    if row["label_smoothing"]:
        words.append(f"label smoothing {row['label_smoothing']:g}")
    words += [
        f"batch size {row['batch_size']:g}",
        "no augmentation" if row["augment"] == "none" else f"{row['augment']} augmentation",
    ]
    return ", ".join(words)
