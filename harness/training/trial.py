"""One trial: build the expandable CNN from a params dict, train it, and measure it."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import keras

from harness.model import build_model, expansion_variables
from harness.params import COEFFICIENT_GROUP_DEFAULTS, TRAINING_DEFAULTS
from harness.training import costs, data, optimizers, recipe
from harness.training.device import enable_determinism


@dataclasses.dataclass
class TrialResult:
    params: dict
    test_accuracy: float | None
    best_val_accuracy: float | None
    total_params: int
    trainable_params: int
    flops: int
    train_seconds: float
    evaluate_seconds: float
    latency_seconds: float | None
    diverged: bool
    failure_reason: str | None
    history: dict
    model: keras.Model = dataclasses.field(repr=False)
    architecture: tuple = dataclasses.field(repr=False, default=())  # `costs.architecture_key`, for caches

    def summary(self):
        """The scalar fields, for printing, with latency in milliseconds as everywhere else."""
        hidden = ("history", "model", "architecture", "latency_seconds")
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in hidden}
        return {**fields, "latency_ms": None if self.latency_seconds is None else self.latency_seconds * 1000}


class StopOnDivergence(keras.callbacks.Callback):
    """Stop training at the first non-finite loss and remember why, and where it went non-finite first
    (`optimizers.divergence_site`)."""

    async_safe = True  # Keras runs batch hooks off the training loop's thread

    def __init__(self):
        super().__init__()
        self.reason = None
        self.epoch = 0

    def on_train_begin(self, logs=None):
        self.initial_norms = optimizers.value_norms(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.reason is None:
            steps = self.params.get("steps") or batch + 1
            site = optimizers.divergence_site(self.model, self.epoch * steps + batch, steps, self.initial_norms)
            self.reason = f"diverged: loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1}" + (
                f"; {site}" if site else ""
            )
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("val_loss")
        if self.reason is None and loss is not None and not math.isfinite(float(loss)):
            self.reason = f"diverged: val_loss became {float(loss)} at epoch {epoch + 1}"
            self.model.stop_training = True


def split_params(params):
    """Split a flat params dict into (model params, training params with defaults)."""
    training = {key: params.get(key, default) for key, default in TRAINING_DEFAULTS.items()}
    model_params = {key: value for key, value in params.items() if key not in TRAINING_DEFAULTS}
    return model_params, training


def compiled_model(params, dataset, epochs):
    """The model `params` describes, compiled with its training recipe (`training.recipe`), and the training
    params; the trial's seed is set first, so it fixes the initialisation."""
    model_params, training = split_params(params)
    keras.utils.set_random_seed(int(training["seed"]))
    enable_determinism()
    model = build_model(
        model_params,
        dataset.input_shape,
        dataset.num_classes,
        augmentation=recipe.augmentation(training, dataset.input_shape),
    )
    group = {key: model_params.get(key, default) for key, default in COEFFICIENT_GROUP_DEFAULTS.items()}
    optimizer = recipe.optimizer(
        training, len(dataset.x_train), epochs, coefficient_lr_scale=group["coefficient_lr_scale"]
    )
    optimizer.group(expansion_variables(model), decay=group["coefficient_decay"])
    model.compile(optimizer=optimizer, loss=recipe.loss(training), metrics=["accuracy"])
    return model, training


def run_trial(
    params: dict[str, Any],
    dataset: data.Dataset,
    epochs: int = 1,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 0,
) -> TrialResult:
    """Train the model `params` describes on `dataset` and measure it.

    The seed fixes initialisation, shuffling, dropout and augmentation, and the
    backend's ops run deterministically (`device.enable_determinism`), so a
    configuration and seed give the same result. A loss that turns NaN or
    infinite stops training at once.

    Args:
        params: The model's keys (`build_model`'s) and the training's (`TRAINING_DEFAULTS`), in one flat dict.
        dataset: The data to train, validate and test on (`harness.training.data.load`).
        epochs: Epochs to train.
        callbacks: Keras callbacks to add to the training's own.
        verbose: Keras's `fit` verbosity.

    Returns:
        The `TrialResult`: accuracies, parameter counts, FLOPs, latency, the history; where the loss diverged,
        `diverged=True`, the reason, and no accuracy.

    Raises:
        ValueError: Params that are not valid (`ModelError` for a model that cannot be built).

    >>> from harness.training import data
    >>> result = run_trial({"insertion": "dense", "function": "softplus", "order": 3}, data.load("digits"))
    >>> 0 <= result.test_accuracy <= 1 and result.flops > 0
    True
    """
    model_params, _ = split_params(params)
    model, training = compiled_model(params, dataset, epochs)
    y_train, y_val, y_test = (
        recipe.targets(y, training, dataset.num_classes) for y in (dataset.y_train, dataset.y_val, dataset.y_test)
    )
    divergence = StopOnDivergence()
    recorded = keras.callbacks.History()  # first in the list: it records an epoch even if a later callback raises
    start = time.perf_counter()
    try:
        model.fit(
            dataset.x_train,
            y_train,
            validation_data=(dataset.x_val, y_val),
            epochs=epochs,
            batch_size=int(training["batch_size"]),
            callbacks=[recorded, divergence, *callbacks],
            verbose=verbose,
        )
    except Exception:
        # What a later callback raised at the end of a diverged epoch (a pruner judging its NaN accuracy) follows
        # from the divergence, which is the trial's outcome.
        if divergence.reason is None:
            raise
    train_seconds = time.perf_counter() - start
    history = {name: [float(v) for v in values] for name, values in recorded.history.items()}
    total_params, trainable_params = costs.parameter_counts(model)
    diverged = divergence.reason is not None
    test_accuracy = latency = None
    start = time.perf_counter()
    if not diverged:
        test_accuracy = float(model.evaluate(dataset.x_test, y_test, verbose=0, return_dict=True)["accuracy"])
    evaluate_seconds = time.perf_counter() - start
    architecture = costs.architecture_key(model_params, dataset.input_shape, dataset.num_classes)
    if not diverged:
        latency = costs.per_architecture(
            architecture, "latency", lambda: costs.latency_per_sample(model, dataset.x_test)
        )
    val_accuracies = [v for v in history.get("val_accuracy", []) if math.isfinite(v)]
    return TrialResult(
        params=dict(params),
        test_accuracy=test_accuracy,
        best_val_accuracy=max(val_accuracies) if val_accuracies else None,
        total_params=total_params,
        trainable_params=trainable_params,
        flops=costs.per_architecture(architecture, "flops", lambda: costs.count_flops(model)),
        train_seconds=train_seconds,
        evaluate_seconds=evaluate_seconds,
        latency_seconds=latency,
        diverged=diverged,
        failure_reason=divergence.reason,
        history=history,
        model=model,
        architecture=architecture,
    )
