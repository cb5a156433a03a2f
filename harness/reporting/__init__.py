"""The report: a study's trials as tables, a verdict, and pages with plots.

`loading` reads a study (Optuna's record joined with its MLflow runs) into one
pandas table; `tables` holds the small table functions over it;
`comparisons` pairs each seeded configuration with its baselines; `verdict`
says it in words; `pages` writes a study's report as Markdown, HTML and PNG,
and `suite` a suite's. This package may import `harness.study` and everything
below it, never the CLI, and it loads no TensorFlow.
"""

from harness.reporting.comparisons import paired_comparisons
from harness.reporting.loading import load_trials
from harness.reporting.pages import write_report
from harness.reporting.tables import (
    baseline_deltas,
    best_trials,
    by_dimension,
    completed,
    config_summary,
    counts,
    pareto_front,
    pivot_best,
)
from harness.reporting.verdict import comparison_sentences, headline, methods, verdict
from harness.statistics import holm

__all__ = [
    "baseline_deltas",
    "best_trials",
    "by_dimension",
    "comparison_sentences",
    "completed",
    "config_summary",
    "counts",
    "headline",
    "holm",
    "load_trials",
    "methods",
    "paired_comparisons",
    "pareto_front",
    "pivot_best",
    "verdict",
    "write_report",
]
