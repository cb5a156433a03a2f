"""Does expanding a CNN's activations into Taylor series pay off, and at what cost?

The public API, importable from here:

    expand           a Keras model of your own, with the expansion put in (`harness.api`)
    search, report   a search and its report, as `harness search` and `harness report` run them
    TaylorExpansion  the Keras layer
    build_model      a backbone with the expansion where a trial's params say
    load_space       a search-space YAML file, checked
    run_trial        one network trained and measured

The package reads like the pipeline, each layer importing only those below it:

    redaction   passwords out of URLs and texts (below everything)
    outputs     output folders written whole, never over a file the tool did not write
    params      the vocabulary: parameter names, allowed values, defaults
    expansion   series coefficients and the `TaylorExpansion` layer
    model       the expandable CNN (`build_model`)
    training    datasets, one trial (`run_trial`), costs, TensorFlow set-up
    study       search spaces, Optuna studies, MLflow tracking, confirmation, workers
    reporting   tables, the verdict and the pages
    api         `expand`, `search`, `report`: the library's front
    cli         `harness ...`, a thin layer over the above
"""

import importlib

# Imported on first use: `harness --help` and a bad space file answer before TensorFlow loads.
_HOMES = {
    "expand": "harness.api",
    "search": "harness.api",
    "report": "harness.api",
    "TaylorExpansion": "harness.expansion.layer",
    "build_model": "harness.model",
    "load_space": "harness.study.space",
    "run_trial": "harness.training.trial",
}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
