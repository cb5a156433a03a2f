"""The expandable network: a backbone, and a Taylor expansion put in where `insertion` says.

Backbones (`harness.model.backbones`): seed_cnn (the default), vgg, resnet20,
resnet56, or a researcher's own network: a builder "package.module:function"
called with (input shape, classes) and `width=` if it takes one, or a saved
"path/net.keras" (its architecture, initialised afresh from the trial's seed).

Insertion points, on every backbone:
    none        the plain backbone, the baseline
    input       each pixel expanded (the second question)
    all         every activation replaced by the series
    first, last the first or the last activation replaced
    after:GLOB  an expansion after each layer whose name matches GLOB
and on some:
    stage1..3   (resnet20, resnet56) every activation of one stage
    conv1       (seed_cnn) after the first conv's ReLU
    conv2       (seed_cnn) after the conv block (after pooling)
    dense       (seed_cnn) after Dense 512's ReLU (the first question's answer)
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from harness.expansion.layer import TaylorExpansion
from harness.model import surgery
from harness.model.backbones import BUILDERS
from harness.params import (
    AFTER,
    APPLICATIONS,
    BASELINE_DEFAULTS,
    EXPANSION_KEYS,
    INSERTIONS_BY_BACKBONE,
    INSERTIONS_EVERYWHERE,
    LAYER_KEYS,
    MODEL_KEYS,
    check_value,
    did_you_mean,
)

# The seed CNN's own insertion points: the layer each follows, and the expansion's name.
SEED_CNN_POINTS = {"conv1": "conv1_activation", "conv2": "pool", "dense": "dense_activation"}
REPLACING = ("all", "first", "last", "stage1", "stage2", "stage3")  # points that replace activations


class ModelError(ValueError):
    """Params that describe no network: an unknown value, an impossible combination, a backbone that cannot be had."""


def insertion_points(backbone):
    """The named insertion points `backbone` has (besides "after:GLOB")."""
    return INSERTIONS_BY_BACKBONE.get(backbone, INSERTIONS_EVERYWHERE)


def check_params(params):
    """Raise `ModelError` if `params` cannot describe a model; return the expansion layer's arguments."""
    try:
        return _checked_expansion(params)
    except ModelError:
        raise
    except ValueError as error:
        raise ModelError(str(error)) from None


def _checked_expansion(params):
    unknown = sorted(set(params) - set(MODEL_KEYS))
    if unknown:
        raise ValueError(
            f"unknown model {'parameter' if len(unknown) == 1 else 'parameters'} {', '.join(unknown)}"
            f"{did_you_mean(unknown[0], MODEL_KEYS)}; expected some of {', '.join(MODEL_KEYS)}"
        )
    backbone = params.get("backbone", BASELINE_DEFAULTS["backbone"])
    check_value("backbone", backbone)
    insertion = params.get("insertion", "none")
    if insertion not in insertion_points(backbone) and not str(insertion).startswith(AFTER):
        raise ValueError(
            f"insertion must be one of {', '.join(insertion_points(backbone))} or '{AFTER}GLOB' "
            f"on {backbone}; got {insertion!r}"
        )
    check_value("width", params.get("width", 1.0))
    expansion = {key: params[key] for key in EXPANSION_KEYS if key in params}
    if insertion == "none" and expansion:
        raise ValueError(
            f"insertion 'none' is the plain baseline and takes no expansion parameters; got {', '.join(expansion)}"
        )
    if insertion in REPLACING and expansion.get("mode") == "expand":
        raise ValueError(
            f"insertion {insertion!r} replaces activations elementwise, so mode must be 'series' or "
            "'weighted', not 'expand'"
        )
    for key in set(expansion) - set(LAYER_KEYS):
        check_value(key, expansion[key])  # the expansion's optimizer group
    layer_arguments = {key: value for key, value in expansion.items() if key in LAYER_KEYS}
    if insertion != "none":
        TaylorExpansion(**layer_arguments)  # validates function, order, center and the choices
    return layer_arguments


def expansion_variables(model):
    """The trainable weights of `model`'s series (coefficients and term weights, not a batchnorm conditioning's):
    the optimizer's own group."""
    expansions = [layer for layer in model.layers if isinstance(layer, TaylorExpansion)]
    weights = [
        w for layer in expansions for w in (layer.coefficients, getattr(layer, "term_weights", None)) if w is not None
    ]
    return [w for w in weights if w.trainable]


def load_backbone(backbone, input_shape, num_classes, width=1.0):
    """The plain network `backbone` names, for inputs of `input_shape` and `num_classes` classes; ValueError naming
    the problem if it cannot be had."""
    if backbone in BUILDERS:
        return BUILDERS[backbone](input_shape, num_classes, width=width)
    if backbone.endswith(".keras"):
        if not Path(backbone).is_file():
            raise ModelError(f"backbone {backbone}: no such model file")
        # Its architecture; the weights are drawn afresh from the trial's seed, as a built-in backbone's are.
        model = keras.models.clone_model(keras.saving.load_model(backbone, compile=False))
    elif backbone.startswith(APPLICATIONS):
        model = _application(backbone, input_shape, num_classes)
    else:
        builder = _imported_builder(backbone)
        takes_width = "width" in inspect.signature(builder).parameters
        model = builder(tuple(input_shape), num_classes, **({"width": width} if takes_width else {}))
        if not isinstance(model, keras.Model):
            raise ModelError(f"backbone {backbone}: returned {type(model).__name__}, not a keras.Model")
    if tuple(model.input_shape[1:]) != tuple(input_shape) or model.output_shape[-1] != num_classes:
        raise ModelError(
            f"backbone {backbone}: takes {model.input_shape[1:]} and gives {model.output_shape[-1]} classes; "
            f"the dataset has {tuple(input_shape)} and {num_classes}"
        )
    return surgery.functional(model)


def _imported_builder(backbone):
    """The function a builder path "package.module:function" names; `ModelError` naming the missing part if none."""
    module_name, _, function_name = backbone.partition(":")
    if os.getcwd() not in sys.path:  # a researcher's package in the folder they run from, as `python -m` finds it
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ModelError(
            f"backbone {backbone}: no module named {error.name!r} (looked in {os.getcwd()} and the installed packages)"
        ) from None
    builder = getattr(module, function_name, None)
    if not callable(builder):
        functions = [name for name, value in vars(module).items() if callable(value) and not name.startswith("_")]
        raise ModelError(
            f"backbone {backbone}: {module.__file__} has no function {function_name!r}"
            f"{did_you_mean(function_name, functions)}"
        )
    return builder


def _application(backbone, input_shape, num_classes):
    """A keras.applications network, "keras.applications.MobileNetV2" say, built afresh for the data."""
    name = backbone.removeprefix(APPLICATIONS)
    constructor = getattr(keras.applications, name, None)
    if not callable(constructor):
        raise ModelError(
            f"backbone {backbone}: keras.applications has no network {name!r}"
            f"{did_you_mean(name, [n for n in dir(keras.applications) if n[:1].isupper()])}"
        )
    try:
        return constructor(weights=None, input_shape=tuple(input_shape), classes=num_classes)
    except ValueError as error:  # Keras's word on inputs it does not take (too small, say)
        raise ModelError(f"backbone {backbone}: {str(error).splitlines()[0]}") from None


def surgery_plan(model, backbone, insertion):
    """What `surgery.rebuild` does for `insertion`, a named point or a list of layer names: (activations replaced,
    {layer: expansion inserted after it})."""
    if not isinstance(insertion, str):
        names = surgery.matching_layers(model, "*")
        for name in insertion:
            if name not in names:
                raise ModelError(f"insertion: {backbone} has no layer {name!r}{did_you_mean(name, names)}")
        return (), {name: f"{name}_expansion" for name in insertion}
    if insertion in SEED_CNN_POINTS and backbone == "seed_cnn":
        return (), {SEED_CNN_POINTS[insertion]: f"{insertion}_expansion"}
    if insertion.startswith(AFTER):
        pattern = insertion.removeprefix(AFTER)
        matched = surgery.matching_layers(model, pattern)
        if not matched:
            raise ModelError(f"insertion {insertion!r}: no layer of {backbone} matches {pattern!r}")
        return (), {name: f"{name}_expansion" for name in matched}
    if insertion not in REPLACING:
        return (), {}
    found = surgery.activations(model)
    chosen = {"all": found, "first": found[:1], "last": found[-1:]}.get(insertion)
    if chosen is None:  # a stage
        chosen = [name for name in found if name.startswith(f"{insertion}_")]
    if not chosen:
        raise ModelError(f"insertion {insertion!r}: {backbone} has no activation to replace there")
    return chosen, {}


def build_model(
    params: dict[str, Any],
    input_shape: Sequence[int],
    num_classes: int,
    *,
    augmentation: Sequence[keras.layers.Layer] = (),
) -> keras.Model:
    """Build the network a trial's params describe: a backbone with the expansion where `insertion` says.

    Args:
        params: A flat dict of `MODEL_KEYS`: `backbone` (default "seed_cnn") picks the network, `insertion`
            (default "none") where the expansion goes, `width` (default 1.0) scales every layer's filters and
            units; the other keys are `TaylorExpansion`'s arguments.
        input_shape: One input's shape, (height, width, channels).
        num_classes: The classes the softmax output has.
        augmentation: Layers applied to the inputs first, in training only.

    Returns:
        The functional Keras model, uncompiled.

    Raises:
        ModelError: A ValueError for params that describe no network (an unknown value, an impossible
            combination, a backbone that cannot be had), naming the problem.

    >>> model = build_model({"backbone": "resnet20", "insertion": "stage2", "function": "gelu", "order": 4},
    ...                     (32, 32, 3), 10)
    >>> sum(isinstance(layer, TaylorExpansion) for layer in model.layers)
    6
    """
    expansion = check_params(params)
    backbone = params.get("backbone", BASELINE_DEFAULTS["backbone"])
    insertion = params.get("insertion", "none")
    model = load_backbone(backbone, input_shape, num_classes, params.get("width", 1.0))
    if insertion == "none" and not augmentation:
        return model
    return insert_expansion(model, insertion, expansion, backbone=backbone, augmentation=augmentation)


def insert_expansion(model, insertion, layer_arguments, *, backbone, augmentation=()):
    """`model` rebuilt with `TaylorExpansion(**layer_arguments)` layers where `insertion` says (`surgery_plan`),
    after the `augmentation` layers, if any; `ModelError` if the result does not fit together."""

    def make_expansion(name):
        # float32 even under mixed precision: high powers overflow float16.
        return TaylorExpansion(**layer_arguments, dtype="float32", name=name)

    replace, insert_after = surgery_plan(model, backbone, insertion)
    input_stage = [*augmentation, *([make_expansion("input_expansion")] if insertion == "input" else [])]
    try:
        return surgery.rebuild(
            model, make_expansion, replace=replace, insert_after=insert_after, input_stage=input_stage
        )
    except ValueError as error:  # Keras's word on shapes that no longer fit (an "expand" before an Add, say)
        raise ModelError(f"insertion {insertion!r} on {backbone}: {str(error).splitlines()[0]}") from None
