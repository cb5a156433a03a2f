"""What a model costs: parameters, forward FLOPs per sample, and inference latency, on every Keras backend.

FLOPs are counted from each layer's shapes, one definition for every backend.
It follows TensorFlow's profiler (`tf.compat.v1.profiler`'s float_operation),
which a test checks it against where TensorFlow is installed: a multiply-add
counts 2; an elementwise add, subtract, multiply, divide, minimum or maximum
1 per element; a bias 1 per output; a max-pool window 1 per element; a
softmax 5 per output; ReLU, tanh, casts and copies nothing.

FLOPs and latency depend on the architecture alone, not on the weights, so a
process measures them once per architecture (`per_architecture`).
"""

import math
import time

import keras
import numpy as np

from harness.expansion.kernels import POWER_BASES
from harness.expansion.layer import TaylorExpansion


def parameter_counts(model):
    """Return (total, trainable) parameter counts."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return model.count_params(), trainable


SOFTMAX_PER_OUTPUT = 5
BATCHNORM_PER_CHANNEL = 6  # rsqrt(variance + epsilon) * scale, and offset - mean * that: once per channel


def _size(shape):
    return math.prod(d for d in shape[1:] if d is not None)


def _activation(layer, outputs):
    activation = getattr(layer, "activation", None)
    return SOFTMAX_PER_OUTPUT * outputs if activation is keras.activations.softmax else 0


def _conv(layer, inputs, outputs):
    kernel = math.prod(layer.kernel_size) * (inputs[-1] // layer.groups)
    count = _size(outputs) * 2 * kernel
    return count + (_size(outputs) if layer.use_bias else 0) + _activation(layer, _size(outputs))


def _dense(layer, inputs, outputs):
    count = _size(outputs) * 2 * inputs[-1]
    return count + (_size(outputs) if layer.use_bias else 0) + _activation(layer, _size(outputs))


def _max_pool(layer, inputs, outputs):
    return _size(outputs) * math.prod(layer.pool_size)


def _batchnorm(layer, inputs, outputs):
    return 2 * _size(inputs) + BATCHNORM_PER_CHANNEL * inputs[-1]


def _global_average_pool(layer, inputs, outputs):
    return _size(inputs)


def _activation_layer(layer, inputs, outputs):
    return _activation(layer, _size(outputs))


def _add(layer, inputs, outputs):
    return _size(outputs) * (len(layer.input) - 1)


def _taylor(layer, inputs, outputs):
    elements, p = _size(inputs), layer.order
    if layer.conditioning == "batchnorm":
        count = 2 * elements + BATCHNORM_PER_CHANNEL * inputs[-1]
    else:
        count = elements * (1 + (2 if layer.conditioning in ("clip", "tanh") else 0))  # x - x0, then the bounds
    if layer.basis != "monomial":
        count += elements  # t = u / limit
    if layer.basis in POWER_BASES:
        # expand: t^k = t^(k-1) t from k = 2, and a_k t^k for each k; else Horner's rule
        count += elements * (max(2 * p, 1) if layer.mode == "expand" else (2 * p if p else 1))
    else:
        # the three-term recurrence from k = 2 (3 ops for Chebyshev's, 5 for Legendre's), then a_k B_k (and the sum)
        recurrence = (3 if layer.basis == "chebyshev" else 5) * max(p - 1, 0)
        count += elements * (recurrence + (p + 1) * (1 if layer.mode == "expand" else 2))
    if layer.mode == "weighted":
        count += math.prod(layer.coefficients.shape)  # the effective coefficients c_j W_j
    if layer.gradient_scale != 1.0:  # the mean gradient's w' = w + (w - w) s on each trainable weight: 3 ops
        weights = (layer.coefficients, getattr(layer, "term_weights", None))
        count += 3 * sum(math.prod(w.shape) for w in weights if w is not None and w.trainable)
    return count


COUNTERS = {
    keras.layers.Conv2D: _conv,
    keras.layers.Dense: _dense,
    keras.layers.MaxPooling2D: _max_pool,
    keras.layers.BatchNormalization: _batchnorm,
    keras.layers.GlobalAveragePooling2D: _global_average_pool,
    keras.layers.Activation: _activation_layer,
    keras.layers.Add: _add,
    TaylorExpansion: _taylor,
}
FREE = (
    keras.layers.InputLayer,
    keras.layers.ReLU,
    keras.layers.Dropout,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.ZeroPadding2D,
    keras.layers.RandomFlip,
    keras.layers.RandomTranslation,
)


def count_flops(model):
    """Forward FLOPs for one sample of a functional `model`, layer by layer; ValueError for a layer it cannot count."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, FREE):
            continue
        counter = next((count for kind, count in COUNTERS.items() if isinstance(layer, kind)), None)
        if counter is None:
            raise ValueError(f"FLOPs: no count for layer {layer.name!r} ({type(layer).__name__})")
        first_input = keras.tree.flatten(layer.input)[0]  # an Add's inputs share one shape
        total += counter(layer, tuple(first_input.shape), tuple(layer.output.shape))
    return int(total)


def latency_per_sample(model, images, *, batch_size=256, repeats=7):
    """Median seconds per sample over `repeats` timed inference batches through Keras's compiled predict step,
    after a warm-up that compiles it; each batch's result is read back, so queued device work is counted."""
    batch = images[:batch_size]
    model.predict_on_batch(batch)
    return float(np.median([_predict_seconds(model, batch) for _ in range(repeats)])) / len(batch)


def _predict_seconds(model, batch):
    """Seconds one inference batch takes through Keras's compiled predict step, its result read back."""
    start = time.perf_counter()
    model.predict_on_batch(batch)
    return time.perf_counter() - start


def latency_ratio(model, reference, images, *, rounds=15, batch_size=256):
    """(median, lowest, highest) over `rounds` of `model`'s inference time per batch over `reference`'s, the two
    timed back to back in each round, first one then the other in turn, after a warm-up that compiles both.

    Timed side by side, the two see the same machine at the same moment: a
    ratio of latencies measured at different times can be off by the machine's
    swings (2x on a shared host).
    """
    batch = images[:batch_size]
    for net in (model, reference):
        net.predict_on_batch(batch)
    nets, ratios = (model, reference), []
    for round_ in range(rounds):
        seconds = [0.0, 0.0]
        for which in (0, 1) if round_ % 2 == 0 else (1, 0):
            seconds[which] = _predict_seconds(nets[which], batch)
        ratios.append(seconds[0] / seconds[1])
    return float(np.median(ratios)), float(np.min(ratios)), float(np.max(ratios))


_MEASURED = {}
# Params that set the values a model computes with, not its ops or shapes: they change no FLOP count or latency.
VALUE_ONLY_PARAMS = ("function", "center", "coefficients", "limit")


def architecture_key(model_params, input_shape, num_classes):
    """What a model's structure depends on: its params (not the training's), input shape, classes and precision."""
    policy = keras.mixed_precision.global_policy().name
    return tuple(sorted(model_params.items())), tuple(input_shape), int(num_classes), policy


def per_architecture(key, name, measure):
    """`measure()` the first time cost `name` is asked for an architecture like `key`; its value after that."""
    params, *rest = key
    cost_key = (tuple(item for item in params if item[0] not in VALUE_ONLY_PARAMS), *rest, name)
    if cost_key not in _MEASURED:
        _MEASURED[cost_key] = measure()
    return _MEASURED[cost_key]
