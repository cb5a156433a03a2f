"""How a trial trains: the optimizer and its schedule, the loss, and the augmentation, from its training params.

Keras's own parts throughout: `keras.optimizers` (Adam, AdamW, SGD with
Nesterov momentum; `weight_decay` is Keras's decoupled decay, applied as
learning rate x decay x weight each step; `clip_norm` is its `global_clipnorm`),
each with the expansion's weights in their own group (`training.optimizers`),
`CosineDecay` for the schedule and
its linear warm-up (with `alpha=1` it holds the rate constant after a warm-up),
and preprocessing layers for the augmentation, which sit in the model, act in
training only and run on every backend.
"""

import math

import keras

from harness.params import COEFFICIENT_GROUP_DEFAULTS
from harness.training import optimizers

SGD_MOMENTUM = 0.9
CROP_PADDING = 4  # pixels: crop_flip shifts each image by up to this many, as a 4-pixel pad and a random crop would


def optimizer(training, train_size, epochs, *, coefficient_lr_scale=COEFFICIENT_GROUP_DEFAULTS["coefficient_lr_scale"]):
    """The optimizer `training` names, with its learning-rate schedule over `epochs` epochs of `train_size` images
    and its expansion group's learning-rate multiplier (`optimizers.CoefficientGroup.group` names the group)."""
    steps_per_epoch = math.ceil(train_size / int(training["batch_size"]))
    rate = learning_rate(training, steps_per_epoch, epochs)
    decay = float(training["weight_decay"]) or None
    common = {"global_clipnorm": float(training["clip_norm"]) or None, "coefficient_lr_scale": coefficient_lr_scale}
    if training["optimizer"] == "sgd":
        return optimizers.SGD(rate, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=decay, **common)
    if training["optimizer"] == "adamw":
        return optimizers.AdamW(rate, weight_decay=float(training["weight_decay"]), **common)
    return optimizers.Adam(rate, weight_decay=decay, **common)


def learning_rate(training, steps_per_epoch, epochs):
    """A constant rate, or a schedule: cosine decay to 0, or constant, after `warmup_epochs` of linear warm-up."""
    rate, warmup = float(training["learning_rate"]), int(training["warmup_epochs"]) * steps_per_epoch
    if training["schedule"] == "constant" and not warmup:
        return rate
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else rate,
        decay_steps=max(1, epochs * steps_per_epoch - warmup),
        alpha=1.0 if training["schedule"] == "constant" else 0.0,
        warmup_target=rate if warmup else None,
        warmup_steps=warmup,
    )


def loss(training):
    """Cross-entropy on the softmax's probabilities, with label smoothing if asked (it needs one-hot targets)."""
    smoothing = float(training["label_smoothing"])
    if smoothing:
        return keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


def targets(labels, training, num_classes):
    """`labels` as `loss(training)` takes them: integers, or one-hot rows under label smoothing."""
    return keras.utils.to_categorical(labels, num_classes) if float(training["label_smoothing"]) else labels


def augmentation(training, input_shape):
    """The augmentation layers `training["augment"]` names, for images of `input_shape` (none for "none").

    crop_flip: a horizontal flip and a shift of up to 4 pixels each way with zero fill, the pixels a 4-pixel
    pad and a random crop would keep; drawn per image and per step from the seeded generator, so each epoch
    sees new draws and a seed repeats them.
    """
    if training["augment"] == "none":
        return []
    height, width = input_shape[0], input_shape[1]
    # float32 under mixed precision too: the next layer casts, and no image op need take float16.
    return [
        keras.layers.RandomFlip("horizontal", dtype="float32", name="augment_flip"),
        keras.layers.RandomTranslation(
            CROP_PADDING / height,
            CROP_PADDING / width,
            fill_mode="constant",
            interpolation="nearest",
            dtype="float32",
            name="augment_crop",
        ),
    ]
