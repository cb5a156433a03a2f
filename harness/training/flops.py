"""Forward FLOPs per sample of a Keras model, counted from each layer's shapes: one definition for every backend.

The count follows TensorFlow's profiler (`tf.compat.v1.profiler`'s
float_operation) on the ops TensorFlow's Keras emits for each layer, which
tests check it against: a multiply-add counts 2; an elementwise add,
subtract, multiply, divide, minimum, maximum or comparison 1 per element; a
bias 1 per output; a pooling window 1 per element; a mean 1 per input
element; a softmax 5 per output; ReLU, tanh, sigmoid, exp, erf, casts,
copies and a max over an axis nothing (the profiler has no count for them).

A layer with no count here counts 0, and `count_flops` says which in one
`UncountedLayers` warning, so a researcher's own layer never stops a study.
"""

import collections
import math
import warnings

import keras

from harness.expansion.kernels import POWER_BASES
from harness.expansion.layer import TaylorExpansion


class UncountedLayers(UserWarning):
    """`count_flops` met layers it has no count for, and counted them as 0."""


Shape = tuple  # a tensor's shape, batch axis first


def _size(shape: Shape) -> int:
    return math.prod(d for d in shape[1:] if d is not None)


SOFTMAX_PER_OUTPUT = 5
BATCHNORM_PER_CHANNEL = 6  # rsqrt(variance + epsilon) * scale, and offset - mean * that: once per channel
# Per output element, the ops TensorFlow emits for each activation function that its profiler counts: sigmoid,
# tanh, exp, erf, softplus and clipping count nothing there, so only the arithmetic around them is left.
ACTIVATION_PER_ELEMENT = {
    **dict.fromkeys(("linear", "relu", "relu6", "leaky_relu", "elu", "selu", "sigmoid", "tanh", "softplus"), 0),
    **dict.fromkeys(("softsign", "exponential", "log_softmax"), 0),
    "mish": 1,  # x * tanh(softplus(x))
    "hard_shrink": 1,  # |x| > threshold
    "tanh_shrink": 1,  # x - tanh(x)
    "hard_sigmoid": 2,  # x / 6 + 0.5, clipped
    "hard_tanh": 2,  # min(max(x, -1), 1)
    "log_sigmoid": 2,  # -softplus(-x)
    "silu": 2,  # x * sigmoid(x), and its custom gradient's identity, a multiply
    "hard_silu": 3,  # x * (x + 3) / 6, clipped
    "gelu": 4,  # x * 0.5 * (1 + erf(x / sqrt(2))), the erf of -x as TensorFlow writes it
    "soft_shrink": 4,  # x - t where x > t, x + t where x < -t
    "squareplus": 4,  # (x + sqrt(x^2 + b)) / 2
    "sparse_sigmoid": 4,  # 0.5 x + 0.5 between -1 and 1
    "sparse_plus": 5,  # (x + 1)^2 / 4 between -1 and 1
    "celu": 5,  # max(x, 0) + min(0, a * (exp(x / a) - 1))
    "softmax": SOFTMAX_PER_OUTPUT,
}
ACTIVATION_PER_ELEMENT["swish"] = ACTIVATION_PER_ELEMENT["silu"]
ACTIVATION_PER_ELEMENT["hard_swish"] = ACTIVATION_PER_ELEMENT["hard_silu"]


def activation_name(layer) -> str | None:
    """The name of the activation `layer` applies (None without one), as `ACTIVATION_PER_ELEMENT` keys it."""
    activation = getattr(layer, "activation", None)
    return None if activation is None else getattr(activation, "__name__", type(activation).__name__)


def _activation(layer, outputs: int) -> int:
    return ACTIVATION_PER_ELEMENT.get(activation_name(layer), 0) * outputs  # 0 without one, or with one unknown


def _bias(layer, output: Shape) -> int:
    return (_size(output) if layer.use_bias else 0) + _activation(layer, _size(output))


def _conv(layer, inputs, output):
    # each output is a dot product over the kernel's window and the input channels of its group
    kernel = math.prod(layer.kernel_size) * (inputs[0][-1] // layer.groups)
    return _size(output) * 2 * kernel + _bias(layer, output)


def _depthwise_conv(layer, inputs, output):
    # each output (input channel x depth multiplier) sees the window of its one input channel
    return _size(output) * 2 * math.prod(layer.kernel_size) + _bias(layer, output)


def _separable_conv(layer, inputs, output):
    # a depthwise conv to channels x multiplier at the output's positions, then a 1x1 conv from those
    positions, middle = _size(output) // output[-1], inputs[0][-1] * layer.depth_multiplier
    depthwise = positions * middle * 2 * math.prod(layer.kernel_size)
    return depthwise + positions * output[-1] * 2 * middle + _bias(layer, output)


def _dense(layer, inputs, output):
    return _size(output) * 2 * inputs[0][-1] + _bias(layer, output)


def _pool(layer, inputs, output):
    return _size(output) * math.prod(layer.pool_size)  # max or average over each window


def _mean(layer, inputs, output):
    return _size(inputs[0])  # global average pooling: the profiler counts a mean as 1 per input element


def _batchnorm(layer, inputs, output):
    # x * a + b, where a = rsqrt(variance + epsilon) [* scale] (3 or 4 per channel) and b = offset - mean * a (2)
    return 2 * _size(inputs[0]) + (BATCHNORM_PER_CHANNEL - (0 if layer.scale else 1)) * inputs[0][-1]


def _layernorm(layer, inputs, output):
    # mean and variance over the normalised axes (mean, squared difference, mean: 4 per element); per position
    # inv = rsqrt(variance + epsilon) (3) and -mean (1); then -mean * inv, one per element once inv * gamma makes
    # inv one per element (if scaled); + beta, per element (if centred); and x * inv + that (2 per element)
    elements, axes = _size(inputs[0]), layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    positions = elements // math.prod(inputs[0][axis] for axis in axes)
    scaled = 2 * elements if layer.scale else positions
    return 6 * elements + 4 * positions + scaled + (elements if layer.center else 0)


def _normalization(layer, inputs, output):
    # (x - mean) / max(sqrt(variance), epsilon), or its inverse: 2 per element, the max once per channel
    return 2 * _size(inputs[0]) + math.prod(layer.mean.shape)


def _rescaling(layer, inputs, output):
    return 2 * _size(output)  # x * scale + offset, the offset added even when it is 0


def _activation_layer(layer, inputs, output):
    return _activation(layer, _size(output))


def _prelu(layer, inputs, output):
    return 4 * _size(output)  # relu(x) - alpha * relu(-x): two negations, a multiply and an add


def _softmax(layer, inputs, output):
    return SOFTMAX_PER_OUTPUT * _size(output)


def _elementwise(layer, inputs, output):
    # add, subtract, multiply, minimum or maximum of n inputs (or of one and a constant): n - 1 ops per output
    return _size(output) * max(len(inputs) - 1, 1)


def _average(layer, inputs, output):
    return _size(output) * len(inputs)  # n - 1 adds, then a division


def _taylor(layer, inputs, output):
    elements, p = _size(inputs[0]), layer.order
    if layer.conditioning == "batchnorm":
        count = 2 * elements + BATCHNORM_PER_CHANNEL * inputs[0][-1]
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


def _free(layer, inputs, output):
    return 0


L = keras.layers
COUNTERS = {
    L.DepthwiseConv2D: _depthwise_conv,  # before Conv2D, should a Keras make it a subclass
    L.SeparableConv2D: _separable_conv,
    L.Conv1D: _conv,
    L.Conv2D: _conv,
    L.Conv3D: _conv,
    L.Dense: _dense,
    (L.MaxPooling1D, L.MaxPooling2D, L.AveragePooling1D, L.AveragePooling2D): _pool,  # no 3D: the profiler has none
    (L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D): _mean,
    L.BatchNormalization: _batchnorm,
    L.LayerNormalization: _layernorm,
    L.Normalization: _normalization,
    L.Rescaling: _rescaling,
    L.Activation: _activation_layer,
    L.Softmax: _softmax,
    L.PReLU: _prelu,
    L.Average: _average,
    (L.Add, L.Subtract, L.Multiply, L.Maximum, L.Minimum): _elementwise,
    TaylorExpansion: _taylor,
    # moving and copying values, or reducing with max, which the profiler does not count
    (L.InputLayer, L.Concatenate, L.Flatten, L.Reshape, L.Permute, L.ZeroPadding2D, L.Cropping2D): _free,
    (L.Identity, L.Dropout, L.ReLU, L.LeakyReLU, L.ELU, L.RandomFlip, L.RandomTranslation): _free,
    (L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D): _free,
}
# Layers keras.applications defines inside its modules, and the Keras ops a functional model applies to tensors
# directly (`x + 3.0`), known by name: they are not part of Keras's public API.
NAMED_COUNTERS = {
    "LayerScale": lambda layer, inputs, output: _size(output),  # ConvNeXt's x * gamma
    "StochasticDepth": _free,  # ConvNeXt's: the identity at inference
    **dict.fromkeys(("Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum"), _elementwise),
    **dict.fromkeys(("Concatenate", "Reshape", "Transpose", "ExpandDims", "Squeeze", "Cast"), _free),
}


def _counter(operation):
    for kinds, count in COUNTERS.items():
        if isinstance(operation, kinds):
            return count
    if type(operation).__module__.startswith("keras."):
        return NAMED_COUNTERS.get(type(operation).__name__)
    return None


def _nodes(model):
    """The calls in `model`'s graph of layers (Keras's own record of it), None for a model that has none (a subclassed
    one) or a layer."""
    graph = getattr(model, "_functional", None) or model  # a Sequential keeps its graph in a functional model
    if not hasattr(graph, "_nodes_by_depth"):
        return None
    return [node for nodes in graph._nodes_by_depth.values() for node in nodes if not node.is_input]


def _count(model, uncounted: collections.Counter) -> int:
    """`model`'s FLOPs, call by call through its graph, and through the graphs of the models it calls."""
    nodes = _nodes(model)
    if nodes is None:
        uncounted[type(model).__name__] += 1
        return 0
    total = 0
    for node in nodes:
        operation = node.operation
        if _nodes(operation) is not None:
            total += _count(operation, uncounted)
            continue
        counter = _counter(operation)
        if counter is None:
            uncounted[type(operation).__name__] += 1
            continue
        name = activation_name(operation)
        if name is not None and name not in ACTIVATION_PER_ELEMENT:
            uncounted[f"{type(operation).__name__}'s activation {name}"] += 1
        inputs = [tuple(tensor.shape) for tensor in node.input_tensors]
        total += counter(operation, inputs, tuple(node.outputs[0].shape))
    return total


def count_flops(model: keras.Model) -> int:
    """Forward FLOPs for one sample of `model`, call by call through its graph of layers (and of models within it).

    A layer with no count here, or an activation function with none, counts 0,
    and one `UncountedLayers` warning names them and how many of each.

    Args:
        model: A functional or Sequential Keras model with a fixed input shape.

    Returns:
        The FLOPs one sample's forward pass takes, as TensorFlow's profiler counts them.
    """
    uncounted = collections.Counter()
    total = _count(model, uncounted)
    if uncounted:
        n, kinds = sum(uncounted.values()), ", ".join(f"{kind} x{n}" for kind, n in sorted(uncounted.items()))
        message = f"FLOPs: no count for {n} layer{'s' * (n != 1)} ({kinds}); counted as 0"
        warnings.warn(message, UncountedLayers, stacklevel=2)
    return int(total)
