"""What a model costs: parameters, forward FLOPs per sample, and inference latency.

FLOPs and latency depend on the architecture alone, not on the weights, so a
process measures them once per architecture (`per_architecture`).
"""

import time

import keras
import numpy as np
import tensorflow as tf

from harness.expansion.layer import TaylorExpansion


def parameter_counts(model):
    """Return (total, trainable) parameter counts."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return model.count_params(), trainable


def count_flops(model):
    """Forward FLOPs for one sample, counted by TensorFlow's profiler on the traced graph.

    The profiler cannot see inside XLA-compiled functions, so expansion layers
    are traced unfused: the same arithmetic as plain ops. A multiply-add counts 2.
    """

    def unfused(layer):
        config = layer.get_config()
        if isinstance(layer, TaylorExpansion):
            config["fused"] = False
        return layer.__class__.from_config(config)

    counting_model = keras.models.clone_model(model, clone_function=unfused)
    spec = tf.TensorSpec((1,) + tuple(model.input_shape[1:]), tf.float32)
    graph = tf.function(lambda x: counting_model(x, training=False)).get_concrete_function(spec).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def latency_per_sample(model, images, batch_size=256, repeats=7):
    """Median seconds per sample over `repeats` timed inference batches, after a warm-up."""
    batch = tf.convert_to_tensor(images[:batch_size])
    infer = tf.function(lambda x: model(x, training=False))
    infer(batch)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        infer(batch).numpy()
        timings.append(time.perf_counter() - start)
    return float(np.median(timings)) / len(batch)


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
