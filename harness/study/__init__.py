"""Studies: many trials searched, tracked and confirmed.

`space` reads a search space, `storage` opens Optuna's storage, `tracking` (with
`spool`) logs runs to MLflow, `lifecycle` is the one trial lifecycle every
engine uses, `search` runs an Optuna study, `workers` runs it in several
processes, `confirm` re-trains configurations with seeds beside their matched
baselines, `tuner` and `compare` run keras-tuner beside Optuna, and `servers`
starts the MLflow UI and the Optuna dashboard. It may import `harness.training`
and everything below it, never `harness.reporting` or the CLI.
"""
