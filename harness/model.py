"""The expandable CNN: the original question's backbone with a Taylor expansion
inserted at one point.

    Conv(32, 3x3, same) ReLU -> Conv(32, 3x3) ReLU -> MaxPool 2 -> Dropout .25
    -> Flatten -> Dense 512 ReLU -> Dropout .5 -> Dense(classes, softmax)

Insertion points:
    none   the plain baseline
    input  each pixel expanded (the second question)
    conv1  after the first conv's ReLU
    conv2  after the conv block (after pooling)
    dense  after Dense 512's ReLU (the first question's answer)
    all    every ReLU replaced by the series activation
"""

import keras

from harness.expansion.layer import TaylorExpansion
from harness.params import EXPANSION_KEYS, INSERTION_POINTS, MODEL_KEYS

def check_params(params):
    """Raise ValueError if `params` cannot describe a model; return the expansion arguments."""
    unknown = sorted(set(params) - set(MODEL_KEYS))
    if unknown:
        raise ValueError(f"unknown model parameter(s) {', '.join(unknown)}; expected some of {', '.join(MODEL_KEYS)}")
    insertion = params.get("insertion", "none")
    if insertion not in INSERTION_POINTS:
        raise ValueError(f"insertion must be one of {', '.join(INSERTION_POINTS)}; got {insertion!r}")
    width = params.get("width", 1.0)
    if not isinstance(width, (int, float)) or width <= 0:
        raise ValueError(f"width must be a positive number, got {width!r}")
    expansion = {key: params[key] for key in EXPANSION_KEYS if key in params}
    if insertion == "none" and expansion:
        raise ValueError(
            f"insertion 'none' is the plain baseline and takes no expansion parameters; got {', '.join(expansion)}"
        )
    if insertion == "all" and expansion.get("mode") == "expand":
        raise ValueError("insertion 'all' replaces each ReLU elementwise, so mode must be 'series' or 'weighted', not 'expand'")
    if insertion != "none":
        TaylorExpansion(**expansion)  # validates function, order, center and the choices
    return expansion


def build_model(params, input_shape, num_classes):
    """Build the CNN described by `params`, a flat dict of `MODEL_KEYS`.

    `insertion` (default "none") picks where the expansion goes and `width`
    (default 1.0) scales every layer's filters and units. The other keys are
    `TaylorExpansion`'s arguments. Nonsensical combinations raise ValueError.
    """
    expansion = check_params(params)
    insertion = params.get("insertion", "none")
    width = params.get("width", 1.0)

    def expansion_layer(name):
        # float32 even under mixed precision: high powers overflow float16.
        return TaylorExpansion(**expansion, dtype="float32", name=name)

    def activation(name):
        return expansion_layer(name) if insertion == "all" else keras.layers.ReLU(name=name)

    def scaled(size):
        return max(1, round(size * width))

    inputs = keras.Input(shape=input_shape, name="image")
    h = inputs
    if insertion == "input":
        h = expansion_layer("input_expansion")(h)
    h = keras.layers.Conv2D(scaled(32), 3, padding="same", name="conv1")(h)
    h = activation("conv1_activation")(h)
    if insertion == "conv1":
        h = expansion_layer("conv1_expansion")(h)
    h = keras.layers.Conv2D(scaled(32), 3, name="conv2")(h)
    h = activation("conv2_activation")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    if insertion == "conv2":
        h = expansion_layer("conv2_expansion")(h)
    h = keras.layers.Dropout(0.25, name="conv_dropout")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(scaled(512), name="dense")(h)
    h = activation("dense_activation")(h)
    if insertion == "dense":
        h = expansion_layer("dense_expansion")(h)
    h = keras.layers.Dropout(0.5, name="dense_dropout")(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="classifier")(h)
    return keras.Model(inputs, outputs, name=f"cnn_{insertion}")
