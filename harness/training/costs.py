"""What a model costs: parameters, forward FLOPs per sample, and inference latency, on every Keras backend.

FLOPs are counted from each layer's shapes, one definition for every backend
(`count_flops`, defined in `harness.training.flops` and imported here). It
follows TensorFlow's profiler (`tf.compat.v1.profiler`'s float_operation),
which tests check it against where TensorFlow is installed: a multiply-add
counts 2; an elementwise add, subtract, multiply, divide, minimum or maximum
1 per element; a bias 1 per output; a pooling window 1 per element; a
softmax 5 per output; ReLU, tanh, sigmoid, casts and copies nothing. A layer
it has no count for counts 0, with an `UncountedLayers` warning naming it.

FLOPs and latency depend on the architecture alone, not on the weights, so a
process measures them once per architecture (`per_architecture`).
"""

import time
from typing import Any

import keras
import numpy as np

from harness.training.flops import UncountedLayers, count_flops  # noqa: F401 (callers find them here)


def parameter_counts(model: keras.Model) -> tuple[int, int]:
    """Return (total, trainable) parameter counts."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return model.count_params(), trainable


def latency_per_sample(model: keras.Model, images: np.ndarray, *, batch_size: int = 256, repeats: int = 7) -> float:
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


def latency_ratio(
    model: keras.Model, reference: keras.Model, images: np.ndarray, *, rounds: int = 15, batch_size: int = 256
) -> tuple[float, float, float]:
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


_MEASURED: dict[tuple, Any] = {}
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
