"""FLOPs counted from shapes are what TensorFlow's profiler counts: for each kind of layer, for every keras.applications
network that takes 32x32 images, and for a layer with no count, which counts 0 with one warning.

Six networks are profiled here, those whose layers had no count before and ResNet50: the rest have the same layer
types, bar NASNet's, which are profiled one layer at a time below, and take minutes to trace.
`HARNESS_ALL_APPLICATIONS=1` profiles all 37 (7 minutes on 2 shared CPU cores); each counts as the profiler does,
exactly.
"""

import os
import warnings

import keras
import pytest

from harness.training.costs import UncountedLayers, count_flops

tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow's profiler is the reference"
)

# keras.applications' constructors, built with weights=None, input_shape=(32, 32, 3), classes=10.
PROFILED_NETWORKS = (  # every layer type keras.applications uses, bar NASNet's SeparableConv2D and Cropping2D
    "ConvNeXtTiny",
    "DenseNet121",
    "EfficientNetB0",
    "MobileNetV2",
    "MobileNetV3Small",
    "ResNet50",
)
ALSO_COVERED = (  # profiled with HARNESS_ALL_APPLICATIONS=1: each counts as the profiler does, without a warning
    *(f"ConvNeXt{size}" for size in ("Small", "Base", "Large", "XLarge")),
    "DenseNet169",
    "DenseNet201",
    *(f"EfficientNetB{b}" for b in range(1, 8)),
    *(f"EfficientNetV2{size}" for size in ("B0", "B1", "B2", "B3", "S", "M", "L")),
    "MobileNet",
    "MobileNetV3Large",
    "NASNetMobile",
    "NASNetLarge",
    "ResNet101",
    "ResNet152",
    *(f"ResNet{depth}V2" for depth in (50, 101, 152)),
    "VGG16",
    "VGG19",
)
REFUSE_32X32 = {"Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75}  # the smallest input each takes
NETWORKS = PROFILED_NETWORKS + (ALSO_COVERED if os.environ.get("HARNESS_ALL_APPLICATIONS") else ())


def profiled_flops(model):
    """Forward FLOPs per sample as TensorFlow's profiler counts them in the traced graph and in the functions it
    calls (Keras runs a grouped convolution as an XLA-compiled function), with each `TaylorExpansion` unfused: plain
    ops, as the profiler cannot see inside an XLA kernel."""
    import tensorflow as tf

    from harness.expansion.layer import TaylorExpansion

    def unfused(layer):
        config = layer.get_config()
        if isinstance(layer, TaylorExpansion):
            config["fused"] = False
        return layer.__class__.from_config(config)

    if any(isinstance(layer, TaylorExpansion) for layer in model.layers):
        model = keras.models.clone_model(model, clone_function=unfused)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"

    def profile(graph):
        called = [op.get_attr("f").name for op in graph.get_operations() if op.type.endswith("PartitionedCall")]
        inside = sum(profile(graph._get_function(name).graph) for name in called)
        return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops + inside

    specs = [tf.TensorSpec((1, *x.shape[1:]), x.dtype) for x in model.inputs]
    forward = tf.function(lambda *x: model(list(x) if len(x) > 1 else x[0], training=False))
    return profile(forward.get_concrete_function(*specs).graph)


def counted_without_warning(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncountedLayers)
        return count_flops(model)


def test_the_lists_name_every_keras_application():
    constructors = {name for name in dir(keras.applications) if name[:1].isupper()}
    assert set(PROFILED_NETWORKS) | set(ALSO_COVERED) | set(REFUSE_32X32) == constructors


@pytest.mark.parametrize("name", REFUSE_32X32)
def test_these_networks_refuse_32x32_images(name):
    with pytest.raises(ValueError, match=f"at least {REFUSE_32X32[name]}x{REFUSE_32X32[name]}"):
        getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)


@tensorflow_only
@pytest.mark.parametrize("name", NETWORKS)
def test_every_keras_application_that_takes_32x32_counts_as_the_profiler_does(name):
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)
    assert counted_without_warning(model) == pytest.approx(profiled_flops(model), rel=0.02)


L = keras.layers
ONE_LAYER = {  # on 4x4x8 inputs (3 for a merge): what the six lack, NASNet's strided separable convs and crops among it
    "batchnorm without scale": lambda x: L.BatchNormalization(scale=False)(x),
    "layernorm without scale": lambda x: L.LayerNormalization(scale=False)(x),
    "layernorm without center": lambda x: L.LayerNormalization(center=False)(x),
    "layernorm over two axes": lambda x: L.LayerNormalization(axis=[-2, -1])(x),
    "inverted normalization": lambda x: L.Normalization(mean=[0.0] * 8, variance=[1.0] * 8, invert=True)(x),
    "grouped conv": lambda x: L.Conv2D(16, 3, groups=4, activation="gelu")(x),
    "conv1d and its pools": lambda x: L.GlobalAveragePooling1D()(
        L.MaxPooling1D()(L.Conv1D(4, 3)(L.Reshape((16, 8))(x)))
    ),
    "conv3d": lambda x: L.Conv3D(4, 2, activation="silu")(L.Reshape((4, 4, 2, 4))(x)),
    "strided depthwise with a multiplier": lambda x: L.DepthwiseConv2D(3, 2, "same", depth_multiplier=2)(x),
    "strided separable with a multiplier": lambda x: L.SeparableConv2D(16, 3, 2, "same", depth_multiplier=2)(x),
    "overlapping average pool": lambda x: L.AveragePooling2D(3, strides=1, padding="same")(x),
    "global average pool, kept dims": lambda x: L.GlobalAveragePooling2D(keepdims=True)(x),
    "global max pool": lambda x: L.GlobalMaxPooling2D()(x),
    "average pool 1d": lambda x: L.AveragePooling1D(3, 1, "same")(L.Reshape((16, 8))(x)),
    "softmax layer": lambda x: L.Softmax()(x),
    "prelu": lambda x: L.PReLU()(x),
    "leaky relu and elu": lambda x: L.ELU()(L.LeakyReLU()(x)),
    "permute and identity": lambda x: L.Identity()(L.Permute((2, 1, 3))(x)),
    "cropping and concatenation": lambda x: L.Concatenate()([x, L.ZeroPadding2D(1)(L.Cropping2D(1)(x))]),
    "keras ops on tensors": lambda x: keras.ops.maximum(x - 1.0, x / 2.0),
    "average": lambda xs: L.Average()(xs),
    "maximum and minimum": lambda xs: L.Minimum()([L.Maximum()(xs), xs[0]]),
    "subtract and multiply": lambda xs: L.Multiply()([L.Subtract()(xs[:2]), xs[2]]),
}
MERGES = ("average", "maximum and minimum", "subtract and multiply")
ACTIVATIONS = ("celu", "gelu", "hard_shrink", "hard_sigmoid", "hard_silu", "hard_tanh", "log_sigmoid", "mish")
ACTIVATIONS += ("selu", "sigmoid", "silu", "soft_shrink", "softplus", "sparse_plus", "sparse_sigmoid", "squareplus")
ACTIVATIONS += ("tanh_shrink",)


def one_layer_model(build, inputs=1):
    xs = [keras.Input((4, 4, 8)) for _ in range(inputs)]
    return keras.Model(xs, build(xs if inputs > 1 else xs[0]))


@tensorflow_only
@pytest.mark.parametrize("kind", ONE_LAYER)
def test_each_layer_counts_as_the_profiler_does(kind):
    model = one_layer_model(ONE_LAYER[kind], 3 if kind in MERGES else 1)
    assert counted_without_warning(model) == profiled_flops(model)


@tensorflow_only
@pytest.mark.parametrize("function", ACTIVATIONS)
def test_each_activation_counts_as_the_profiler_does(function):
    model = one_layer_model(lambda x: L.Activation(function)(x))
    assert counted_without_warning(model) == profiled_flops(model)


class Squash(keras.layers.Layer):
    def call(self, x):
        return x * x


def cube(x):
    return x * x * x


def test_a_layer_with_no_count_counts_0_with_one_warning():
    x = keras.Input((4, 4, 2))
    h = Squash()(Squash()(L.Conv2D(3, 3, activation=cube)(x)))
    model = keras.Model(x, L.Dense(10)(L.Flatten()(h)))
    with pytest.warns(UncountedLayers) as warned:
        flops = count_flops(model)
    assert [str(w.message) for w in warned] == [
        "FLOPs: no count for 3 layers (Conv2D's activation cube x1, Squash x2); counted as 0"
    ]
    conv, dense = 2 * 2 * 3 * (2 * 3 * 3 * 2 + 1), 10 * (2 * 12 + 1)  # multiply-adds and biases
    assert flops == conv + dense


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(10)

    def call(self, x):
        return self.dense(x)


def test_a_model_with_no_graph_of_layers_counts_0_with_one_warning():
    model = Subclassed()
    model(keras.ops.zeros((1, 4)))
    with pytest.warns(UncountedLayers, match=r"no count for 1 layer \(Subclassed x1\)"):
        assert count_flops(model) == 0
