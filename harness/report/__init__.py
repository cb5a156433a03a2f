"""The report: a study's trials as tables, a verdict, and pages with plots.

`tables` reads a study (Optuna's record joined with its MLflow runs) into pandas
tables and computes the verdict; `pages` writes them as Markdown, HTML and PNG.
This package may import `harness.study` and everything below it, never the CLI.
"""

from harness.report.tables import (
    baseline_deltas,
    best_trials,
    by_dimension,
    completed,
    config_summary,
    counts,
    holm,
    load_trials,
    paired_comparisons,
    pareto_front,
    pivot_best,
    verdict,
)
from harness.report.pages import write_report

__all__ = [
    "baseline_deltas", "best_trials", "by_dimension", "completed", "config_summary", "counts", "holm",
    "load_trials", "paired_comparisons", "pareto_front", "pivot_best", "verdict", "write_report",
]

