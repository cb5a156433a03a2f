"""The vocabulary of a trial's params: every key and the values each may take.

Plain data with no heavy imports, so a search space or a command line can be
checked in a fraction of a second, before TensorFlow loads. The layer, the
model and the trial runner take their names from here.
"""

import math

# Functions with a Taylor series in `harness.expansion.series`.
FUNCTIONS = ("exp", "softplus", "log1p", "log", "sin", "cos", "tanh", "sigmoid", "gelu", "swish")
MAX_ORDER = 20

# `TaylorExpansion`'s choices.
MODES = ("series", "weighted", "expand")
COEFFICIENTS = ("fixed", "trainable")
CONDITIONINGS = ("none", "clip", "tanh", "batchnorm")
EXPAND_OUTPUTS = ("terms", "partial_sums")

# The CNN's: where the expansion goes, and its arguments.
INSERTION_POINTS = ("none", "input", "conv1", "conv2", "dense", "all")
EXPANSION_KEYS = ("function", "order", "center", "mode", "coefficients", "per_unit", "conditioning", "expand_outputs",
                  "limit")
MODEL_KEYS = ("insertion", "width") + EXPANSION_KEYS

# Training's, with their defaults.
TRAINING_DEFAULTS = {"learning_rate": 1e-3, "batch_size": 64, "seed": 0}
PARAM_KEYS = MODEL_KEYS + tuple(TRAINING_DEFAULTS)

# The values a categorical param may take.
ALLOWED_VALUES = {
    "insertion": INSERTION_POINTS,
    "function": FUNCTIONS,
    "mode": MODES,
    "coefficients": COEFFICIENTS,
    "conditioning": CONDITIONINGS,
    "expand_outputs": EXPAND_OUTPUTS,
    "per_unit": (True, False),
}

# What a baseline shares with the configurations it is compared to, and its values when a space searches them.
BASELINE_DEFAULTS = {"width": 1.0, "learning_rate": TRAINING_DEFAULTS["learning_rate"],
                     "batch_size": TRAINING_DEFAULTS["batch_size"]}


def describe(params):
    """A configuration in a few words, e.g. 'dense softplus p3 weighted trainable per-unit tanh'.

    Only the keys present are described; training params (width, learning
    rate, batch size, seed) are left out.
    """
    if params.get("insertion", "none") == "none":
        return "baseline"
    words = [params["insertion"], params.get("function"), params.get("order"), params.get("mode")]
    words[2] = None if words[2] is None else f"p{words[2]}"
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
    return " ".join(str(w) for w in words if w is not None)


def check_value(name, value):
    """Raise ValueError, starting with `name`, if `value` is not one param `name` can take."""
    allowed = ALLOWED_VALUES.get(name)
    if allowed is not None and value not in allowed:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(map(str, allowed))}")
    if name == "order" and not (isinstance(value, (int, float)) and float(value).is_integer() and 0 <= value <= MAX_ORDER):
        raise ValueError(f"order: {value!r} is out of range; orders are integers from 0 to {MAX_ORDER}")
    numeric_positive = ("width", "learning_rate", "batch_size", "limit")
    if name in numeric_positive and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value)):
        raise ValueError(f"{name}: {value!r} must be a positive number")
