"""A comparison in words and numbers: its finding (better, worse, equivalent, undecided, not trained), its
difference with the CI, its cost ratios, and the answer's small tables built from them."""

import math

import pandas as pd

from harness.reporting.comparisons import TUNED
from harness.reporting.layout import plural
from harness.statistics import (
    COSTS_ACCURACY,
    COSTS_ACCURACY_WITHIN_MARGIN,
    EQUIVALENT,
    INCONCLUSIVE,
    MAX_SEEDS,
    NOT_TRAINED,
    PAYS_OFF,
    PAYS_OFF_WITHIN_MARGIN,
)


# Each finding (`statistics.Finding`) in words, before "its matched baseline"; `finding_words` shortens them.
FINDING_WORDS = {
    PAYS_OFF: "better than",
    PAYS_OFF_WITHIN_MARGIN: "better, by less than the margin, than",
    COSTS_ACCURACY: "worse than",
    COSTS_ACCURACY_WITHIN_MARGIN: "worse, by less than the margin, than",
    EQUIVALENT: "equivalent within the margin to",
    INCONCLUSIVE: "undecided against",
}


def finding_words(row):
    """A comparison's finding in a word or two: better, worse, equivalent, undecided (with "after Holm" where its
    95% CI excludes 0 but the Holm-adjusted test does not agree), or not trained."""
    if row["finding"] == NOT_TRAINED:
        return NOT_TRAINED
    words = FINDING_WORDS[row["finding"]].removesuffix(" than").removesuffix(" to").removesuffix(" against")
    if excluded_only_before_holm(row):
        words += " after Holm"
    return words


def tally(words):
    """How findings in words (`finding_words`) add up: '0 better, 3 equivalent, 9 undecided'; better and undecided
    always, the others where there are some."""
    words = pd.Series(list(words), dtype=str)
    counts = [
        (label, int(words.str.startswith(start).sum()))
        for start, label in (
            ("better", "better"),
            ("worse", "worse"),
            ("equivalent", "equivalent"),
            ("undecided", "undecided"),
            (NOT_TRAINED, "not trained (no answer)"),
        )
    ]
    return ", ".join(f"{n} {label}" for label, n in counts if n or label in ("better", "undecided"))


def excluded_only_before_holm(row):
    """Whether a comparison's unadjusted 95% CI excludes 0 while its Holm-adjusted test finds nothing: an interval
    that looks like a finding and is not one."""
    return row["finding"] == INCONCLUSIVE and (row["ci low"] > 0 or row["ci high"] < 0)


def ratio_words(row):
    """'1.01x the FLOPs and 1.16x the latency' of a comparison with its matched baseline."""
    words = [
        f"{row[f'{cost} ratio']:.2f}x the {name}"
        for cost, name in (("flops", "FLOPs"), ("latency_ms", "latency"))
        if pd.notna(row.get(f"{cost} ratio"))
    ]
    return " and ".join(words) or "a cost not measured"


def settling_words(row):
    seeds = row["seeds to settle"]
    if pd.isna(seeds):
        return "more seeds"
    return f"about {seeds:g} seeds" if math.isfinite(seeds) else f"more than {MAX_SEEDS} seeds"


def flops_words(flops):
    return f"{flops / 1e9:.3g} GFLOPs" if flops >= 1e9 else f"{flops / 1e6:.3g} MFLOPs"


def matched_comparisons(comparisons):
    """The comparisons with a matched baseline, numbered from 1 as the answer's table and plot show them."""
    matched = comparisons[comparisons["baseline"] != TUNED].reset_index(drop=True)
    return matched.set_axis(range(1, len(matched) + 1))


def answer_table(comparisons):
    """The answer's table: a row per confirmed configuration against its matched baseline, 8 columns at most."""
    matched = matched_comparisons(comparisons)
    return pd.DataFrame(
        {
            "#": matched.index,
            **_compared_columns(matched, "baseline's"),
            "FLOPs": [_ratio(row, "flops") for _, row in matched.iterrows()],
            "latency": [_ratio(row, "latency_ms") for _, row in matched.iterrows()],
        }
    )


def tuned_table(comparisons):
    """Each configuration against the tuned baseline, with both FLOPs as they are (its network may differ); empty
    where the tuned baseline is a matched one."""
    tuned = comparisons[comparisons["baseline"] == TUNED]
    if tuned.empty:
        return tuned
    return pd.DataFrame(
        {
            **_compared_columns(tuned, "tuned baseline's"),
            "FLOPs (tuned baseline's)": [
                f"{flops_words(row['flops'])} ({flops_words(row['baseline flops'])})"
                if pd.notna(row.get("flops"))
                else "-"
                for _, row in tuned.iterrows()
            ],
        }
    )


def _compared_columns(rows, baseline):
    """The columns every answer table shares: configuration, accuracies, difference with its CI, finding, seeds."""
    return {
        "configuration": rows["configuration"],
        f"test accuracy ({baseline})": [
            f"{a:.1%} ({b:.1%})" for a, b in zip(rows["accuracy"], rows["baseline accuracy"])
        ],
        "difference, points (95% CI)": [difference_words(row) for _, row in rows.iterrows()],
        "finding": [finding_words(row) for _, row in rows.iterrows()],
        "seeds": rows["seeds"],
    }


def difference_words(row):
    """'+0.3 (-0.7 to +1.3)': a difference in points with its 95% CI."""
    ci = f" ({row['ci low']:+.1f} to {row['ci high']:+.1f})" if pd.notna(row["ci low"]) else " (no CI)"
    return f"{row['delta (points)']:+.1f}{ci}"


def _ratio(row, cost):
    return f"{row[f'{cost} ratio']:.2f}x" if pd.notna(row.get(f"{cost} ratio")) else "-"


def baseline_words(row):
    """What a matched baseline shares with its configuration, in words: 'seed_cnn at width 1, adam at learning rate
    0.001 (constant), batch size 64, no augmentation'."""
    words = [
        f"{row['backbone']} at width {row['width']:g}",
        f"{row['optimizer']} at learning rate {row['learning_rate']:.3g} "
        f"({row['schedule']}"
        + (f", warm-up {plural(row['warmup_epochs'], 'epoch')})" if row["warmup_epochs"] else ")"),
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
