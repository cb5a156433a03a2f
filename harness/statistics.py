"""The tests behind a verdict, from scipy and statsmodels: paired differences, equivalence, power, and the seeds a
confirmation needs.

Every function takes paired differences (or the two paired samples) in points of accuracy and knows nothing of
studies or tables, so the report and the seed sizing judge alike, and a simulation can run them by the thousand.
"""

import dataclasses
import math
import warnings
from typing import Literal, get_args

import numpy as np
from scipy import stats
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired
from statsmodels.tools.sm_exceptions import ConvergenceWarning

ALPHA, POWER = 0.05, 0.8
MAX_SEEDS = 1000  # "seeds to settle" beyond this reads as "more than 1000"
PILOT_SEEDS = 3  # `--seeds auto`: seeds of the pilot that sizes a confirmation; its runs are not tested
MIN_SEEDS = 3  # the fewest seeds a sized confirmation trains
UNTRAINED_SHARE = 0.1  # a run that got less than this share of the way from chance to perfect did not train


def untrained(accuracy, num_classes):
    """Whether `accuracy` (a number or an array) lies less than a tenth of the way from chance (1 / `num_classes`) to
    perfect: a network that did not train, whose comparisons say nothing of the idea (0.186 on 10 classes is)."""
    chance = 1 / num_classes
    return np.asarray(accuracy) < chance + UNTRAINED_SHARE * (1 - chance)


def untrained_reason(accuracy, num_classes, measured="accuracy"):
    """The flag's words: 'not trained: test accuracy 0.104, less than a tenth of the way from chance (0.100) to 1'."""
    return (
        f"not trained: {measured} {accuracy:.3f}, less than a tenth of the way from chance ({1 / num_classes:.3f}) to 1"
    )


def holm(p_values):
    """Holm's step-down adjustment of `p_values`; NaN stays NaN, out of the count.

    The same numbers as statsmodels' `multipletests(method="holm")` (a test
    checks it), which calls `gc.collect()` on every call: 70 ms in a process
    holding TensorFlow, too slow for a simulation of thousands of studies.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid])]
    scaled = (len(order) - np.arange(len(order))) * p[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def says_nothing_of_spread(differences):
    """Fewer than two pairs, or the same difference on every seed: no spread to judge a test by."""
    return len(differences) < 2 or np.ptp(differences) == 0


def paired_test(values, reference, confidence=0.95):
    """(mean difference, CI low, CI high, p-value) of paired samples, by scipy's paired t-test.

    Fewer than two pairs, or the same difference on every seed, leave the CI and
    the p-value undefined (NaN): the seeds then say nothing of the spread, and
    a constant difference is no certainty.
    """
    differences = values - reference
    mean = differences.mean()
    if says_nothing_of_spread(differences):
        return mean, np.nan, np.nan, np.nan
    test = stats.ttest_rel(values, reference)
    interval = test.confidence_interval(confidence)
    return mean, interval.low, interval.high, test.pvalue


def equivalence_p(values, reference, rope):
    """The p-value of statsmodels' paired TOST that the mean difference lies within +-`rope` (NaN where the seeds
    say nothing of the spread, as in `paired_test`)."""
    if says_nothing_of_spread(values - reference):
        return np.nan
    return float(ttost_paired(values, reference, -rope, rope)[0])


def power(differences, rope):
    """(the smallest difference these seeds detect with 80% power at the 5% level, the seeds that would settle an
    inconclusive comparison), from the observed spread of the paired differences (statsmodels' `TTestPower`).

    Settling means either detecting the observed difference (two-sided) or showing it lies within +-`rope`
    (one side of the TOST, at the observed difference): whichever needs fewer seeds.
    """
    if says_nothing_of_spread(differences):
        return np.nan, np.nan
    spread = np.std(differences, ddof=1)
    analysis = TTestPower()
    detectable = analysis.solve_power(nobs=len(differences), alpha=ALPHA, power=POWER, alternative="two-sided") * spread
    observed = abs(float(np.mean(differences)))
    routes = [(observed / spread, "two-sided"), ((rope - observed) / spread, "larger")]
    needed = [seeds_for(effect, alternative=alternative) for effect, alternative in routes if effect > 0]
    return float(detectable), min(needed, default=math.inf)


def seeds_for(effect, *, alpha=ALPHA, alternative="two-sided"):
    """The seeds a paired t-test needs to detect a standardised `effect` with 80% power at `alpha`; inf beyond
    `MAX_SEEDS` or where statsmodels' solver finds none (a tiny effect)."""
    if TTestPower().power(effect_size=effect, nobs=2, alpha=alpha, alternative=alternative) >= POWER:
        return 2  # a huge effect: the solver looks for no fewer
    try:
        with warnings.catch_warnings():  # no solution in the solver's range comes back as NaN
            warnings.simplefilter("ignore", ConvergenceWarning)
            seeds = TTestPower().solve_power(
                effect_size=effect, alpha=alpha, power=POWER, alternative=alternative, nobs=None
            )
    except (ValueError, RuntimeError):  # or as an error
        return math.inf
    seeds = float(np.ravel(seeds)[0])
    return math.ceil(seeds) if math.isfinite(seeds) and seeds <= MAX_SEEDS else math.inf


@dataclasses.dataclass(frozen=True)
class AutoSeeds:
    """`--seeds auto`: a pilot of `PILOT_SEEDS` seeds sizes a seeded stage (`sized_seeds`: a difference of `rope`
    points detected with 80% power, at most `max_seeds`), then that many fresh seeds train and are tested; the
    pilot's runs are not."""

    max_seeds: int = 20
    rope: float = 1.0


def sized_seeds(pilot_differences, rope, max_seeds):
    """`--seeds auto`: the seeds the confirmation trains after its pilot, from the pilot's paired differences (one
    array per comparison), capped at `max_seeds`.

    The rule sizes a fixed-size test from a pilot whose runs the test does not
    reuse, so the false-finding rate stays at the test's nominal 5%: the size
    depends on the pilot alone, and the test sees only fresh seeds. It gives the
    seeds that detect a difference of `rope` points with 80% power at
    0.05 / K (K comparisons, Bonferroni, which Holm's first step is), from the
    largest spread the pilot saw. A pilot with no spread to go by gets the cap.
    """
    spreads = [np.std(d, ddof=1) if not says_nothing_of_spread(d) else math.inf for d in pilot_differences]
    if not spreads or not all(math.isfinite(s) for s in spreads):
        return max_seeds
    needed = seeds_for(rope / max(spreads), alpha=ALPHA / len(spreads))
    return int(min(max(needed, MIN_SEEDS), max_seeds))


# What a comparison says: one definition, which the report's words, tallies and plots key on.
Finding = Literal[
    "pays off",
    "pays off, by less than the margin",
    "costs accuracy",
    "costs accuracy, by less than the margin",
    "equivalent",
    "inconclusive",
    "not trained: no answer",  # a run of the pair did not train (`untrained`): the comparison says nothing
]
(
    PAYS_OFF,
    PAYS_OFF_WITHIN_MARGIN,
    COSTS_ACCURACY,
    COSTS_ACCURACY_WITHIN_MARGIN,
    EQUIVALENT,
    INCONCLUSIVE,
    NOT_TRAINED,
) = get_args(Finding)


def finding(low, high, p_holm, p_equivalent_holm, rope) -> Finding:
    """What a comparison says, each once its Holm-adjusted test agrees, so K comparisons cannot manufacture one:
    pays off (CI above 0) or costs accuracy (CI below 0), either "by less than the margin" when the CI also lies
    within +-`rope`; else equivalent (the TOST within +-`rope`); else inconclusive."""
    within = -rope < low and high < rope
    if low > 0 and p_holm < ALPHA:
        return PAYS_OFF_WITHIN_MARGIN if within else PAYS_OFF
    if high < 0 and p_holm < ALPHA:
        return COSTS_ACCURACY_WITHIN_MARGIN if within else COSTS_ACCURACY
    if p_equivalent_holm < ALPHA:
        return EQUIVALENT
    return INCONCLUSIVE


def findings(differences, rope, confidence=0.95):
    """The finding of each comparison whose paired differences (points) are in `differences`, Holm-adjusted over
    them all: the verdict's rule on bare numbers (a simulation's)."""
    zero = [np.zeros_like(d) for d in differences]
    tests = [paired_test(d, z, confidence) for d, z in zip(differences, zero)]
    p_holm = holm([t[3] for t in tests])
    p_equivalent = holm([equivalence_p(d, z, rope) for d, z in zip(differences, zero)])
    return [finding(t[1], t[2], p, q, rope) for t, p, q in zip(tests, p_holm, p_equivalent)]
