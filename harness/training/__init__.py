"""One trial, without bookkeeping: load a dataset, build and train the CNN, measure what it costs.

`data` loads and caches datasets, `trial.run_trial` trains one configuration
and returns a `TrialResult`, `costs` counts parameters and FLOPs and times
inference, `device` configures TensorFlow's threads, GPUs and precision. It may
import `harness.model`, `harness.expansion` and `harness.params`; it knows
nothing of studies, Optuna or MLflow.
"""
