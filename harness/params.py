"""The vocabulary of a trial's params: every key and the values each may take.

Plain data with no heavy imports, so a search space or a command line can be
checked in a fraction of a second, before TensorFlow loads. The layer, the
model and the trial runner take their names from here.
"""

import difflib
import math
import numbers
from typing import Literal, get_args

# Functions with a Taylor series in `harness.expansion.series`.
Function = Literal["exp", "softplus", "log1p", "log", "sin", "cos", "tanh", "sigmoid", "gelu", "swish"]
FUNCTIONS = get_args(Function)
MAX_ORDER = 20

# `TaylorExpansion`'s choices.
Mode = Literal["series", "weighted", "expand"]
MODES = get_args(Mode)
Coefficients = Literal["fixed", "trainable"]
COEFFICIENTS = get_args(Coefficients)
# The polynomial's basis on t = (x - x0) / limit, where bounded conditioning keeps |t| <= 1 ("monomial": raw powers
# of x - x0, the layer before bases existed), and how a coefficient's gradient adds up over the values sharing it.
Basis = Literal["scaled", "chebyshev", "legendre", "monomial"]
BASES = get_args(Basis)
CoefficientGradient = Literal["mean", "sum"]
COEFFICIENT_GRADIENTS = get_args(CoefficientGradient)
Conditioning = Literal["none", "clip", "tanh", "batchnorm"]
CONDITIONINGS = get_args(Conditioning)
ExpandOutputs = Literal["terms", "partial_sums"]
EXPAND_OUTPUTS = get_args(ExpandOutputs)

# The networks (`harness.model.backbones`); a `backbone` may also name a builder ("package.module:function") or a
# saved model ("path/net.keras"), a researcher's own network.
Backbone = Literal["seed_cnn", "vgg", "resnet20", "resnet56"]
BACKBONES = get_args(Backbone)
APPLICATIONS = "keras.applications."  # "keras.applications.MobileNetV2": one of Keras's networks, built afresh
# Where the expansion goes. Every network has none, input, all, first and last; "after:PATTERN" inserts it after
# each layer whose name matches the glob PATTERN.
Insertion = Literal["none", "input", "all", "first", "last", "conv1", "conv2", "dense", "stage1", "stage2", "stage3"]
INSERTION_POINTS = get_args(Insertion)
INSERTIONS_EVERYWHERE = INSERTION_POINTS[:5]
INSERTIONS_BY_BACKBONE: dict[Backbone, tuple[Insertion, ...]] = {
    "seed_cnn": INSERTIONS_EVERYWHERE + INSERTION_POINTS[5:8],
    "vgg": INSERTIONS_EVERYWHERE,
    "resnet20": INSERTIONS_EVERYWHERE + INSERTION_POINTS[8:],
    "resnet56": INSERTIONS_EVERYWHERE + INSERTION_POINTS[8:],
}
AFTER = "after:"
LAYER_KEYS = (  # `TaylorExpansion`'s arguments
    "function",
    "order",
    "center",
    "mode",
    "coefficients",
    "per_unit",
    "conditioning",
    "expand_outputs",
    "limit",
    "basis",
    "coefficient_gradient",
)
# The expansion's optimizer group (`training.optimizers`): its learning rate as a multiple of the recipe's, and
# whether weight decay applies to it (PAU's set-up: no decay on an activation's own parameters).
COEFFICIENT_GROUP_DEFAULTS = {"coefficient_lr_scale": 1.0, "coefficient_decay": False}
EXPANSION_KEYS = LAYER_KEYS + tuple(COEFFICIENT_GROUP_DEFAULTS)
MODEL_KEYS = ("backbone", "insertion", "width") + EXPANSION_KEYS

# Training's, with their defaults (today's recipe: Adam at a constant rate, no decay, smoothing or augmentation).
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
AUGMENTATIONS = ("none", "crop_flip")
TRAINING_DEFAULTS = {
    "learning_rate": 1e-3,
    "batch_size": 64,
    "optimizer": "adam",
    "weight_decay": 0.0,
    "schedule": "constant",
    "warmup_epochs": 0,
    "label_smoothing": 0.0,
    "augment": "none",
    "clip_norm": 0.0,  # the gradients' global norm is clipped to this (0: no clipping), baseline and expansion alike
    "seed": 0,
}
PARAM_KEYS = MODEL_KEYS + tuple(TRAINING_DEFAULTS)

# The values a categorical param may take.
ALLOWED_VALUES = {
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "augment": AUGMENTATIONS,
    "function": FUNCTIONS,
    "mode": MODES,
    "coefficients": COEFFICIENTS,
    "conditioning": CONDITIONINGS,
    "expand_outputs": EXPAND_OUTPUTS,
    "basis": BASES,
    "coefficient_gradient": COEFFICIENT_GRADIENTS,
    "per_unit": (True, False),
    "coefficient_decay": (True, False),
}

# What a matched baseline shares with the configuration it is compared to (everything but the expansion and the
# seed), and its values where a space searches them.
BASELINE_DEFAULTS = {
    "backbone": "seed_cnn",
    "width": 1.0,
    **{key: value for key, value in TRAINING_DEFAULTS.items() if key != "seed"},
}


def did_you_mean(name, known):
    """' (did you mean 'order'?)' where `name` is close to one of `known` (difflib), else ''."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(params):
    """A configuration in a few words, e.g. 'dense softplus p3 weighted trainable per-unit tanh'.

    Only the keys present are described, and the backbone only when it is not
    the seed CNN; training params (width, learning rate, batch size, seed, the
    recipe) are left out.
    """
    backbone = params.get("backbone", BASELINE_DEFAULTS["backbone"])
    network = [] if backbone == BASELINE_DEFAULTS["backbone"] else [backbone_label(backbone)]
    if params.get("insertion", "none") == "none":
        return " ".join(network + ["baseline"])
    order = params.get("order")
    words = network + [
        params["insertion"],
        params.get("function"),
        None if order is None else f"p{order}",
        params.get("mode"),
    ]
    if params.get("center"):
        words.append(f"x0={params['center']:g}")
    if params.get("expand_outputs") not in (None, "terms"):
        words.append(params["expand_outputs"])
    if params.get("coefficients") == "trainable":
        words.append("trainable")
    if params.get("per_unit"):
        words.append("per-unit")
    if params.get("conditioning") not in (None, "none"):
        words.append(params["conditioning"])
    if params.get("basis") not in (None, "scaled"):
        words.append(params["basis"])
    if params.get("coefficient_gradient") == "sum":
        words.append("summed-gradient")
    if params.get("coefficient_lr_scale", 1.0) != 1.0:
        words.append(f"lr x{params['coefficient_lr_scale']:g}")
    if params.get("coefficient_decay"):
        words.append("decayed")
    return " ".join(str(w) for w in words if w is not None)


def backbone_label(backbone):
    """A backbone in one word: its name, a builder's function name, or a saved model's file name."""
    return backbone.removeprefix(APPLICATIONS).rsplit(":", 1)[-1].rsplit("/", 1)[-1]


def check_choice(name, value, choices):
    """`value` if it is one of `choices`; else ValueError naming `name`, the choices and `value`.

    The one phrasing for an argument picked from a list (the layer's, the model's, a stage's settings); a trial's
    params, as a space or a command line gives them, are checked by `check_value`.

    >>> check_choice("mode", "sum", MODES)
    Traceback (most recent call last):
    ...
    ValueError: mode must be one of series, weighted, expand; got 'sum'
    """
    if value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}{did_you_mean(value, choices)}"
        )
    return value


def check_value(name, value):
    """Raise ValueError, starting with `name`, if `value` is not one param `name` can take."""
    if name == "backbone" and not (
        value in BACKBONES or _is_builder(value) or str(value).endswith(".keras") or str(value).startswith(APPLICATIONS)
    ):
        raise ValueError(
            f"backbone: {value!r} is not one of {', '.join(BACKBONES)}{did_you_mean(value, BACKBONES)}, a builder "
            f"'package.module:function', a saved model 'path/net.keras' or '{APPLICATIONS}NAME'"
        )
    if (
        name == "insertion"
        and value not in INSERTION_POINTS
        and not (isinstance(value, str) and value.startswith(AFTER) and len(value) > len(AFTER))
    ):
        raise ValueError(
            f"insertion: {value!r} is not one of {', '.join(INSERTION_POINTS)} or '{AFTER}PATTERN'"
            f"{did_you_mean(value, INSERTION_POINTS)}"
        )
    allowed = ALLOWED_VALUES.get(name)
    if allowed is not None and value not in allowed:
        raise ValueError(
            f"{name}: {value!r} is not one of {', '.join(map(str, allowed))}{did_you_mean(value, allowed)}"
        )
    integral = isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer()
    if name == "order" and not (integral and 0 <= value <= MAX_ORDER):
        raise ValueError(f"order: {value!r} is out of range; orders are integers between 0 and {MAX_ORDER}")
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if name in ("width", "learning_rate", "batch_size", "limit", "coefficient_lr_scale") and not (
        numeric and value > 0
    ):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if name in ("weight_decay", "warmup_epochs", "clip_norm") and not (numeric and value >= 0):
        raise ValueError(f"{name} must be a number of at least 0, got {value!r}")
    if name == "warmup_epochs" and not integral:
        raise ValueError(f"warmup_epochs: {value!r} must be a whole number of epochs")
    if name == "label_smoothing" and not (numeric and 0 <= value < 1):
        raise ValueError(f"label_smoothing: {value!r} must be at least 0 and below 1")


def _is_builder(value):
    module, _, function = str(value).partition(":")
    return bool(module and function) and all(part.isidentifier() for part in [*module.split("."), function])
