"""How often the verdict's rule claims a difference that is not there, and finds one that is, by seed rule.

Synthetic paired differences (no training), run through the verdict's own rule (`harness.statistics.findings`,
Holm over each study's comparisons): fixed seeds, `--seeds auto` (a pilot that is never tested sizes the seeds),
and the invalid rule `--seeds auto` must not be (add a seed and test again until something shows).
`tests/test_statistics.py` runs these same functions and holds their figures to bounds.

    python benchmarks/seed_rules.py [--studies 2000] [--spread 1.5]
"""

import argparse
import math

import numpy as np

from harness import statistics

CLAIMS = ("pays off", "costs accuracy")


def fixed(rng, effects, spread, seeds=5):
    return statistics.findings([rng.normal(e, spread, seeds) for e in effects], rope=1.0)


def pilot_sized(rng, effects, spread, max_seeds=30):
    pilot = [rng.normal(e, spread, statistics.PILOT_SEEDS) for e in effects]
    seeds = statistics.sized_seeds(pilot, rope=1.0, max_seeds=max_seeds)
    return statistics.findings([rng.normal(e, spread, seeds) for e in effects], rope=1.0)


def peeking(rng, effects, spread, max_seeds=10):
    differences = [rng.normal(e, spread, max_seeds) for e in effects]
    for seeds in range(3, max_seeds + 1):
        found = statistics.findings([d[:seeds] for d in differences], rope=1.0)
        if any(f.startswith(CLAIMS) for f in found):
            break
    return found


def rate(rule, effects, studies, spread, seed):
    """How often a study's first comparison (with an effect) or any comparison (without) is claimed."""
    rng = np.random.default_rng(seed)
    if any(effects):
        return float(np.mean([rule(rng, effects, spread)[0].startswith("pays off") for _ in range(studies)]))
    return float(np.mean([any(f.startswith(CLAIMS) for f in rule(rng, effects, spread)) for _ in range(studies)]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--spread", type=float, default=1.5, help="spread of the paired differences, in points")
    args = parser.parse_args()
    error = math.sqrt(0.05 * 0.95 / args.studies)
    print(f"{args.studies} studies, two comparisons each, paired differences with a spread of {args.spread} points")
    for name, rule in (("fixed 5 seeds", fixed), ("--seeds auto", pilot_sized), ("peeking (invalid)", peeking)):
        no_effect = rate(rule, np.zeros(2), args.studies, args.spread, seed=0)
        print(f"{name:18} false-finding rate {no_effect:.1%} (nominal 5%, sampling error {error:.1%})", end="")
        if rule is not peeking:
            power = rate(rule, np.array([1.0, 0.0]), args.studies, args.spread, seed=1)
            print(f", found a true gain of 1 point in {power:.0%} of studies", end="")
        print()


if __name__ == "__main__":
    main()
