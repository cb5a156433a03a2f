"""The answer in words: the headline a researcher could paste, what the comparisons rest on (the method), and a
sentence per comparison with every number it rests on."""

import pandas as pd

from harness.params import BASELINE_DEFAULTS, MODEL_KEYS, describe
from harness.reporting.comparisons import (
    LATENCY_ROUNDS,
    MATCHED,
    ONE_BASELINE,
    TUNED,
    paired_comparisons,
)
from harness.reporting.findings import (
    FINDING_WORDS,
    baseline_words,
    excluded_only_before_holm,
    finding_words,
    flops_words,
    ratio_words,
    settling_words,
    tally,
)
from harness.reporting.layout import plural
from harness.statistics import (
    COSTS_ACCURACY,
    COSTS_ACCURACY_WITHIN_MARGIN,
    EQUIVALENT,
    INCONCLUSIVE,
    NOT_TRAINED,
    PAYS_OFF,
    PAYS_OFF_WITHIN_MARGIN,
)
from harness.reporting.tables import ACCURACY, COSTS, DEFAULT_ROPE, completed, plain, search_stage, seeded_stage


def verdict(trials, *, confirm_command=None, metric=ACCURACY, rope=DEFAULT_ROPE, comparisons=None):
    """The answer in one or two plain sentences: the confirmed configuration that leads, against its matched
    baseline, and what every confirmed one found (`headline`); without confirmation runs, the search's best,
    flagged as optimistic.

    `confirm_command` is shown to a study that has no confirmation runs; `rope` is the margin of practical
    equivalence in points; `comparisons` is `paired_comparisons(trials, rope=rope)` where the caller has it.
    """
    comparisons = paired_comparisons(trials, rope=rope) if comparisons is None else comparisons
    if not comparisons.empty:
        return headline(comparisons, rope)
    done = completed(search_stage(trials))
    if done.empty:  # seeded runs alone, and no expanded configuration among those that completed
        seeded = seeded_stage(trials)
        expanded = seeded[seeded["insertion"] != "none"] if "insertion" in seeded else seeded.iloc[:0]
        if not completed(expanded).empty:
            return [
                "No answer: no seeded configuration has a completed matched baseline run with the same seeds to "
                "pair with."
            ]
        reasons = sorted(set(expanded["failure_reason"].dropna())) if "failure_reason" in expanded else []
        return [
            f"No answer: no expanded configuration completed ({plural(len(expanded), 'seeded run')}, none "
            "complete), so there is nothing to compare with the baseline."
            + (f" Reasons: {'; '.join(reasons[:3])}." if reasons else "")
        ]
    best = done.loc[done[metric].idxmax()]
    described = describe({k: plain(best[k]) for k in MODEL_KEYS if k in best and pd.notna(best[k])})
    text = (
        f"No answer yet: the best of {len(done)} completed search trials (#{int(best['trial'])}, {described}) "
        f"reaches {best[metric]:.1%} validation accuracy, selected on validation, so optimistic: picked as the "
        "best of many with one seed each, it is biased upward (the winner's curse)."
    )
    if bool(best.get("untrained", False)):
        text += " It did not train (near chance): " + NOT_TRAINED + "."
    lines = [text]
    if confirm_command:
        lines.append(f"No configuration was confirmed with seeds on held-out data. Confirm the best: {confirm_command}")
    return lines


def headline(comparisons, rope):
    """The answer a researcher could paste: the leading configuration against its matched baseline (points, 95%
    CI, seeds, finding, FLOPs and latency ratios), then the tally over every confirmed configuration."""
    matched = comparisons[comparisons["baseline"] != TUNED]
    if matched.empty:
        return ["No answer: no configuration has a matched baseline run with the same seeds to pair with."]
    trained = matched[matched["finding"] != NOT_TRAINED]
    if trained.empty:
        accuracy = matched["baseline accuracy"].mean()
        return [
            f"No answer: the networks did not train (the matched {plural(len(matched), 'baseline', number=False)} reached "
            f"{accuracy:.1%} test accuracy, near chance), so no comparison says anything of the expansion. Train "
            "longer or on more data, or with another recipe."
        ]
    paying = trained[trained["finding"].isin([PAYS_OFF, PAYS_OFF_WITHIN_MARGIN])]
    lead = (paying if not paying.empty else trained).sort_values("delta (points)", ascending=False).iloc[0]
    # Picked as the best of several on the same test runs: said so.
    which = (
        f"The best of {len(matched)} confirmed configurations" if len(matched) > 1 else "The confirmed configuration"
    )
    ci = f"95% CI {lead['ci low']:+.1f} to {lead['ci high']:+.1f}, " if pd.notna(lead["ci low"]) else "no CI, "
    statement = f"{which}, {lead['configuration']}, is {FINDING_WORDS[lead['finding']]} its matched baseline"
    if lead["finding"] == EQUIVALENT:
        statement = statement.replace("the margin", f"\u00b1{rope:g} {plural(rope, 'point', number=False)}")
    first = (
        f"{statement}: {lead['delta (points)']:+.1f} points of test accuracy "
        f"({ci}{plural(lead['seeds'], 'seed')}), at {ratio_words(lead)}."
    )
    if lead["finding"] == INCONCLUSIVE:
        first = first[:-1] + f"; {settling_words(lead)} would settle it."
    second = (
        f"Of {plural(len(matched), 'configuration')} confirmed against their matched baselines: "
        + tally(finding_words(row) for _, row in matched.iterrows())
        + f" (each test Holm-adjusted over all {len(comparisons)} comparisons)."
    )
    return [first, second] if len(matched) > 1 or len(comparisons) > 1 else [first]


def methods(trials, comparisons, rope):
    """What the seeded comparisons rest on: runs, baselines and how they were tuned, what each seed varied, the
    margin and the tests."""
    seeded = seeded_stage(trials)
    configurations = comparisons["configuration"].nunique()
    text = (
        f"{plural(len(seeded), 'seeded run')} judged on the test set: {plural(configurations, 'configuration')}, "
        f"each re-trained with {plural(seeded['seed'].nunique(), 'seed')} beside its matched baseline: the plain "
        "network with the same backbone, width, training recipe, epochs and seeds, everything but the expansion."
    )
    searched = search_stage(trials)
    baseline_trials = int((searched["insertion"] == "none").sum()) if "insertion" in searched else 0
    if comparisons["baseline"].isin([TUNED, ONE_BASELINE]).any():
        text += (
            " The tuned baseline is the plain network with the hyperparameters that did best (on validation) "
            f"among the baseline's {plural(baseline_trials, 'search trial')}, against "
            f"{plural(len(searched) - baseline_trials, 'search trial')} of expanded networks; it is re-trained with "
            "the same seeds."
        )
        if (comparisons["baseline"] == ONE_BASELINE).all():
            text += (
                " Its hyperparameters are the matched baseline's (the space searches none that the baseline "
                "shares, or the best were the defaults), so the two are one network, trained once."
            )
    pilot = trials[trials["stage"] == "pilot"] if "stage" in trials else trials.iloc[:0]
    if not pilot.empty:
        text += (
            f" The seeds were sized by a pilot of {plural(pilot['seed'].nunique(), 'other seed')} (--seeds auto: "
            "enough to detect a difference of the margin with 80% power at 0.05 over the comparisons, from the "
            "pilot's spread); the pilot's runs are not tested, so the sizing leaves the tests at their 5% level."
        )
    text += " " + variance_sources(seeded)
    text += (
        f" Differences within \u00b1{rope:g} {plural(rope, 'point', number=False)} count as practically none (the "
        "margin of practical equivalence, harness report --rope); each finding needs its test (paired t, or paired "
        f"TOST for equivalence) below 0.05 once Holm-adjusted over the {plural(len(comparisons), 'comparison')}. "
        "The intervals shown are each comparison's own 95% CI, not adjusted: one that excludes 0 while its "
        'Holm-adjusted test does not agree is marked "undecided after Holm", not a finding.'
        f" A run whose accuracy is less than a tenth of the way from chance to 1 did not train: a comparison "
        f'resting on one says "{NOT_TRAINED}".'
    )
    if "duplicates left out" in comparisons:
        text += (
            f" {plural(int(comparisons['duplicates left out'].sum()), 'duplicate run')} of a configuration and "
            "seed were left out: each seed counts once, with its earliest run."
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


def comparison_sentences(comparisons, rope):
    """One sentence per comparison, every number it rests on: the difference, CI, p-values, accuracies, costs,
    power, and the baseline's recipe."""
    return [_comparison_sentence(row, comparisons, rope) for _, row in comparisons.iterrows()]


def _comparison_sentence(row, comparisons, rope):
    if pd.notna(row["ci low"]):
        ci = f"95% CI {row['ci low']:+.1f} to {row['ci high']:+.1f}"
    elif row["seeds"] >= 2:
        ci = "no CI: every seed gave the same difference, which says nothing of its spread; more seeds or a larger test set would"
    else:
        ci = "no CI from one seed"
    p_holm = f"Holm-adjusted p = {row['p (Holm)']:.3g}" if pd.notna(row["p (Holm)"]) else "no p-value"
    if pd.notna(row["p equivalent (Holm)"]):
        p_holm += f", equivalence p = {row['p equivalent (Holm)']:.3g}"
    margin = f"\u00b1{rope:g} {plural(rope, 'point', number=False)}"
    statement = {
        PAYS_OFF: "pays off",
        PAYS_OFF_WITHIN_MARGIN: f"pays off, by less than the {margin} margin",
        COSTS_ACCURACY: "costs accuracy",
        COSTS_ACCURACY_WITHIN_MARGIN: f"costs accuracy, by less than the {margin} margin",
        EQUIVALENT: f"is equivalent to it within {margin}",
        INCONCLUSIVE: "is inconclusive at this budget",
        NOT_TRAINED: f"has no answer: {plural(row['untrained runs'], 'run')} of the pair did not train",
    }[row["finding"]]
    if excluded_only_before_holm(row):
        statement += " once corrected for the comparisons made (Holm)"
    power = ""
    if pd.notna(row["detectable (points)"]) and row["finding"] != NOT_TRAINED:
        power = (
            f" These {plural(row['seeds'], 'seed')} detect a difference of {row['detectable (points)']:.1f} points "
            "with 80% power at the 5% level (from the spread of the paired differences)"
        )
        if row["finding"] == INCONCLUSIVE:
            power += f"; settling it would take {settling_words(row)}"
        power += "."
    return (
        f"{row['configuration']} against {BASELINE_WORDS[row['baseline']]} {statement}: {row['delta (points)']:+.1f} "
        f"points of test accuracy ({ci}; paired over {plural(row['seeds'], 'seed')}; {p_holm}), "
        f"{row['accuracy']:.1%} against {row['baseline accuracy']:.1%}, {cost_words(row, comparisons)}.{power} "
        f"The baseline: {baseline_words(row)}."
    )


def cost_words(row, comparisons):
    """A comparison's costs in words, each saying how it was measured: ratios against a matched baseline; against
    the tuned one, both FLOPs as they are and how its network and recipe differ from the matched one's."""
    if row["baseline"] == TUNED:
        words = (
            "costs not given as ratios: the tuned baseline differs from the configuration in more than the expansion"
        )
        if pd.notna(row.get("flops")):
            words += f" ({flops_words(row['flops'])} per example against its {flops_words(row['baseline flops'])})"
        differing = tuned_differences(row, comparisons)
        if differing:
            words += "; it differs from the matched baseline in " + ", ".join(differing)
        return words
    words = [
        f"{row[f'{cost} ratio']:.2f}x its {name}"
        for cost, name in (("flops", "FLOPs"), ("total_params", "parameters"))
        if pd.notna(row.get(f"{cost} ratio"))
    ]
    for cost, how in (
        ("latency_ms", f"{LATENCY_ROUNDS} interleaved rounds timed by this report"),
        ("train_seconds", f"{plural(row['seeds'], 'per-seed ratio')}"),
    ):
        if pd.notna(row.get(f"{cost} ratio")):
            words.append(
                f"{row[f'{cost} ratio']:.2f}x its {COSTS[cost]} (median of {how}, {row[f'{cost} ratio low']:.2f} "
                f"to {row[f'{cost} ratio high']:.2f}"
                + ("; wall clock on the machine that trained them)" if cost == "train_seconds" else ")")
            )
    return "at " + (", ".join(words) or "no cost measured")


def tuned_differences(row, comparisons):
    """How the tuned baseline of comparison `row` differs from its configuration's matched baseline, in words:
    ['width 0.5 against 1', 'learning rate 0.00273 against 0.00251']."""
    matched = comparisons[(comparisons["configuration"] == row["configuration"]) & (comparisons["baseline"] == MATCHED)]
    if matched.empty:
        return []
    return [
        f"{key.replace('_', ' ')} {plain(row[key])} against {plain(matched[key].iloc[0])}"
        for key in BASELINE_DEFAULTS
        if key in row and plain(row[key]) != plain(matched[key].iloc[0])
    ]


def tuned_baseline_note(comparisons):
    """What the tuned baseline is, and how it differs from the first configuration's matched baseline."""
    row = comparisons[comparisons["baseline"] == TUNED].iloc[0]
    differing = tuned_differences(row, comparisons)
    return (
        f"The tuned baseline: {baseline_words(row)}. It differs from {row['configuration']}'s matched baseline in "
        + (", ".join(differing) if differing else "nothing but the seeds")
        + ", so costs are not given as ratios against it."
    )
