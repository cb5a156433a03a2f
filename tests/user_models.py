"""A researcher's own networks, named by the tests as builders ("tests.user_models:mixed_relus")."""

import keras


def mixed_relus(input_shape, num_classes, width=1.0):
    """A small functional model with both kinds of activation: a `ReLU` layer and a Conv2D's fused activation="relu"."""
    inputs = keras.Input(shape=input_shape)
    h = keras.layers.Conv2D(max(1, round(8 * width)), 3, padding="same", activation="relu", name="block1_conv")(inputs)
    h = keras.layers.Conv2D(max(1, round(8 * width)), 3, padding="same", name="block2_conv")(h)
    h = keras.layers.ReLU(name="block2_relu")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    h = keras.layers.Dense(16, activation="relu", name="head")(h)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax", name="classifier")(h))


def small_sequential(input_shape, num_classes):
    """The same idea as a Sequential model without a width."""
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(num_classes, activation="softmax", name="classifier"),
        ]
    )
