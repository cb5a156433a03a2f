"""The networks a study can expand, each a small builder of (input shape, classes, width) -> `keras.Model`.

Every activation is a named `ReLU` layer, so the expansion can find it (`harness.model.surgery`):

    seed_cnn   the original question's CNN: conv1, conv2 (3x3, 32) -> pool -> Dense 512 -> classifier
    vgg        VGG-11 with batch norm for 32x32 inputs: 8 convs (64 .. 512) in 5 blocks, global pooling
    resnet20   the CIFAR ResNets of He et al. (2016): a 16-filter stem, then three stages of 3 (resnet20) or
    resnet56   9 (resnet56) basic blocks with 16, 32 and 64 filters, global average pooling

`width` scales every layer's filters and units. The ResNets' shortcuts where the shape changes are 1x1
projections (the paper's option B), as in `keras.applications`' ResNets: with 10 classes, 274,042 and 860,026
parameters, 1.5% and 1.2% above the 0.27M and 0.85M of the paper's Table 6 (its option A pads with zeros).
"""

from collections.abc import Callable

import keras

from harness.params import Backbone

VGG11 = ((64,), (128,), (256, 256), (512, 512), (512, 512))  # filters of each block's convs; a max-pool ends each


def _scaled(size, width):
    return max(1, round(size * width))


def _classifier(h, num_classes):
    # float32 under mixed precision too: the softmax of float16 logits loses the small probabilities.
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="classifier")(h)


def seed_cnn(input_shape, num_classes, width=1.0):
    """Conv(32, 3x3, same) ReLU -> Conv(32, 3x3) ReLU -> MaxPool 2 -> Dropout .25 -> Dense 512 ReLU -> Dropout .5."""
    inputs = keras.Input(shape=input_shape, name="image")
    h = keras.layers.Conv2D(_scaled(32, width), 3, padding="same", name="conv1")(inputs)
    h = keras.layers.ReLU(name="conv1_activation")(h)
    h = keras.layers.Conv2D(_scaled(32, width), 3, name="conv2")(h)
    h = keras.layers.ReLU(name="conv2_activation")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Dropout(0.25, name="conv_dropout")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(_scaled(512, width), name="dense")(h)
    h = keras.layers.ReLU(name="dense_activation")(h)
    h = keras.layers.Dropout(0.5, name="dense_dropout")(h)
    return keras.Model(inputs, _classifier(h, num_classes), name="seed_cnn")


def _conv_bn_relu(h, filters, name, strides=1, relu=True):
    h = keras.layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, kernel_initializer="he_normal", name=f"{name}conv"
    )(h)
    h = keras.layers.BatchNormalization(name=f"{name}bn")(h)
    return keras.layers.ReLU(name=f"{name}relu")(h) if relu else h


def vgg(input_shape, num_classes, width=1.0):
    """VGG-11 with batch norm: each block's 3x3 convs, then a 2x2 max-pool ('same' padding, so small inputs fit)."""
    inputs = keras.Input(shape=input_shape, name="image")
    h = inputs
    for block, convs in enumerate(VGG11, start=1):
        for conv, filters in enumerate(convs, start=1):
            h = _conv_bn_relu(h, _scaled(filters, width), f"block{block}_{conv}_")
        h = keras.layers.MaxPooling2D(2, padding="same", name=f"block{block}_pool")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(inputs, _classifier(h, num_classes), name="vgg11")


def _basic_block(h, filters, strides, name):
    """conv-bn-relu, conv-bn, plus the shortcut (projected where the shape changes), then relu."""
    shortcut = h
    y = _conv_bn_relu(h, filters, f"{name}_1_", strides=strides)
    y = _conv_bn_relu(y, filters, f"{name}_2_", relu=False)
    if strides != 1 or h.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, kernel_initializer="he_normal", name=f"{name}_shortcut_conv"
        )(h)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    h = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out_relu")(h)


def cifar_resnet(depth):
    """The builder of the CIFAR ResNet with `depth` = 6n + 2 layers: three stages of n basic blocks."""
    blocks = (depth - 2) // 6

    def resnet(input_shape, num_classes, width=1.0):
        inputs = keras.Input(shape=input_shape, name="image")
        h = _conv_bn_relu(inputs, _scaled(16, width), "stem_")
        for stage, filters in enumerate((16, 32, 64), start=1):
            for block in range(1, blocks + 1):
                strides = 2 if stage > 1 and block == 1 else 1
                h = _basic_block(h, _scaled(filters, width), strides, f"stage{stage}_block{block}")
        h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
        return keras.Model(inputs, _classifier(h, num_classes), name=f"resnet{depth}")

    resnet.__name__ = f"resnet{depth}"
    return resnet


# Keyed by `params.Backbone`, as the series are by `params.Function`.
BUILDERS: dict[Backbone, Callable[..., keras.Model]] = {
    "seed_cnn": seed_cnn,
    "vgg": vgg,
    "resnet20": cifar_resnet(20),
    "resnet56": cifar_resnet(56),
}
