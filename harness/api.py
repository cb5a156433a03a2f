"""The library's front: expand a Keras model you already have, run a search, write its report.

Each is what a command does (`harness search`, `harness report`) or what a
search does to each network it trains (`expand`), callable from a notebook.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from harness.params import AFTER, LAYER_KEYS, Coefficients, Function, Mode, did_you_mean

if TYPE_CHECKING:
    import keras
    import optuna

    from harness.reporting.pages import Report


# Where `expand` puts the expansion in any model (besides "after:GLOB" and a list of layer names).
ModelInsertion = Literal["all", "first", "last", "input"]
MODEL_INSERTIONS = get_args(ModelInsertion)
# `TaylorExpansion`'s arguments: a search's, and `fused` (False: plain ops, not one XLA kernel per layer shape).
EXPAND_OPTIONS = (*LAYER_KEYS, "fused")


def expand(
    model: keras.Model,
    insertion: ModelInsertion | str | Sequence[str] = "all",
    *,
    function: Function = "softplus",
    order: int = 3,
    center: float = 0.0,
    mode: Mode = "series",
    coefficients: Coefficients = "fixed",
    **options: Any,
) -> keras.Model:
    """A new model: `model` with `TaylorExpansion` layers put in where `insertion` says.

    The model may be functional or Sequential, a `keras.applications` network
    or your own. Its layers keep their weights where their input shape is
    unchanged; `model` itself is left as it was.

    Args:
        model: A built Keras model.
        insertion: Where the expansions go. "all", "first" or "last" replace
            the model's activations (ReLU and Activation layers, and a Conv or
            Dense layer's `activation=`; the output's softmax is left alone) by
            the series; "input" expands the inputs; "after:GLOB" puts an
            expansion after each layer whose name matches the glob; a list of
            layer names puts one after each.
        function: The function whose Taylor series is used (`harness.params.FUNCTIONS`).
        order: The series' order p, 0 to 20.
        center: The point x0 the series is taken around (0: Maclaurin).
        mode: "series" (y = s_p(x)), "weighted" (a trainable sum of the
            partial sums) or "expand" (the last axis grows by p + 1, one output
            per term; not where activations are replaced).
        coefficients: "fixed" (the series' c_k) or "trainable" (starting at them).
        **options: `TaylorExpansion`'s other arguments (`per_unit`, `conditioning`,
            `limit`, `basis`, `fused`, ...).

    Returns:
        A new functional `keras.Model` (uncompiled) holding the expansions.

    Raises:
        ValueError: An unknown option or value, a layer name the model lacks
            (each with the nearest valid name), or an expansion whose output
            no longer fits the next layer.

    >>> import keras
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
    ...                           keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    >>> expanded = expand(model, "all", function="softplus", order=4)
    >>> [type(layer).__name__ for layer in expanded.layers[1:]]
    ['Conv2D', 'TaylorExpansion', 'Flatten', 'Dense']
    """
    from harness.model import REPLACING, ModelError, insert_expansion, surgery

    unknown = sorted(set(options) - set(EXPAND_OPTIONS))
    if unknown:
        raise ValueError(
            f"expand: unknown option {unknown[0]!r}{did_you_mean(unknown[0], EXPAND_OPTIONS)}; "
            f"expected some of {', '.join(EXPAND_OPTIONS)}"
        )
    arguments = dict(function=function, order=order, center=center, mode=mode, coefficients=coefficients, **options)
    if isinstance(insertion, str) and insertion not in MODEL_INSERTIONS and not insertion.startswith(AFTER):
        raise ValueError(
            f"expand: insertion {insertion!r} is not one of {', '.join(MODEL_INSERTIONS)}, '{AFTER}GLOB' or a list "
            f"of layer names{did_you_mean(insertion, MODEL_INSERTIONS)}"
        )
    if isinstance(insertion, str) and insertion in REPLACING and mode == "expand":
        raise ValueError(f"expand: insertion {insertion!r} replaces activations, so mode cannot be 'expand'")
    from harness.expansion.layer import TaylorExpansion

    TaylorExpansion(**arguments)  # checks the function, order, center and choices before any surgery
    try:
        return insert_expansion(surgery.functional(model), insertion, arguments, backbone=model.name)
    except ModelError as error:
        raise ValueError(f"expand: {error}") from None


def search(
    space: str | Path = "search_spaces/quick.yaml",
    *,
    study: str | None = None,
    trials: int = 12,
    confirm: int = 2,
    seeds: int = 5,
    storage: str | None = None,
    tracking_uri: str | None = None,
    **settings: Any,
) -> optuna.Study:
    """Search a space, then confirm its best configurations with fresh seeds: `harness search` from Python.

    Args:
        space: A search-space YAML file (see the schema reference).
        study: The study's name; the space file's name by default. A study
            that exists is resumed.
        trials: How many trials the search holds, the baseline included.
        confirm: How many of the best expanded configurations are re-trained
            beside their matched baselines and the tuned baseline (0: none).
        seeds: Fresh seeds for each confirmed configuration and baseline.
        storage: Optuna's storage URL; `$HARNESS_STORAGE` or a journal file
            under `$HARNESS_HOME` by default.
        tracking_uri: MLflow's tracking URI; `$HARNESS_TRACKING_URI` or an
            SQLite store under `$HARNESS_HOME` by default.
        **settings: `SearchSettings`' other fields (`sampler`, `pruner`,
            `seed`, `timeout`, `baseline_every`, ...).

    Returns:
        The search's Optuna study (the confirmation's is `<study>-confirm`).

    Raises:
        ValueError: A bad space file or setting, or a stage that did not end
            as asked (its trials' failure reasons were printed).
    """
    from harness.study.confirm import search_and_confirm
    from harness.study.search import Search
    from harness.study.settings import SearchSettings
    from harness.study.space import find_space, load_space

    path = find_space(space)
    search = Search(
        load_space(path),
        SearchSettings(
            study_name=study or Path(path).stem,
            n_trials=trials,
            storage=storage,
            tracking_uri=tracking_uri,
            **settings,
        ),
    )
    code, _ = search_and_confirm(search, confirm, seeds)
    if code:
        raise ValueError(f"study {search.settings.study_name!r} did not end as asked; the same call resumes it")
    return search.study


def report(
    study: str | Sequence[str] = "quick",
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    out: str | Path | None = None,
    rope: float = 1.0,
) -> Report:
    """Write a study's report, its answer first: `harness report` from Python.

    Args:
        study: The study's name (or several, compared in one report).
        storage: Optuna's storage URL, found as `search` finds it by default.
        tracking_uri: MLflow's tracking URI, found as `search` finds it by default.
        out: The report's folder, `reports/<study>` by default. It must be new,
            empty, or an earlier report.
        rope: The margin, in points of accuracy, within which a difference
            counts as practically none.

    Returns:
        The `Report`: its `folder` and its `answer`, the sentences the page opens with.

    Raises:
        ValueError: An unknown study, or an `out` folder holding files the tool did not write.
    """
    from harness.reporting.pages import write_report
    from harness.study.storage import resolve_stores

    studies = [study] if isinstance(study, str) else list(study)
    storage, tracking_uri = resolve_stores(storage, tracking_uri)
    return write_report(studies, storage, tracking_uri, out, rope=rope)
