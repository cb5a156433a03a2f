"""The Keras callbacks a study hangs on a trial's training: its progress line, a stop on request, its epochs
reported to Optuna and logged to MLflow. (The trial's own, a stop on a NaN loss, is `training.trial`'s.)"""

import time

import keras


class TrialProgress(keras.callbacks.Callback):
    """The trial in flight: epoch x/y, validation accuracy and time left.

    On a terminal, a transient bar under the study's (advanced every batch,
    described every epoch); elsewhere, one line per epoch, so logs stay short.
    """

    async_safe = True  # Keras runs batch hooks off the training loop's thread

    def __init__(self, console, label, epochs, progress=None):
        super().__init__()
        self.console, self.label, self.epochs = console, label, epochs
        self.progress = progress if progress is not None and console.is_terminal else None
        self.task = None
        self.epochs_done = 0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        if self.progress is not None:
            self.task = self.progress.add_task(
                f"{self.label} epoch 1/{self.epochs}", total=self.epochs * (self.params.get("steps") or 1)
            )

    def on_train_batch_end(self, batch, logs=None):
        if self.task is not None:
            self.progress.advance(self.task)

    def on_epoch_end(self, epoch, logs=None):
        done, elapsed = epoch + 1, time.perf_counter() - self.start
        self.epochs_done = done
        accuracy = (logs or {}).get("val_accuracy")
        text = (
            f"{self.label} epoch {done}/{self.epochs}"
            + (f", val acc {float(accuracy):.3f}" if accuracy is not None else "")
            + f", {elapsed:.0f} s, about {elapsed / done * (self.epochs - done):.0f} s left"
        )
        if self.task is not None:
            self.progress.update(self.task, description=text)
        else:
            self.console.print(text, highlight=False, markup=False)

    def on_train_end(self, logs=None):
        if self.task is not None:
            self.progress.remove_task(self.task)


class StopOnRequest(keras.callbacks.Callback):
    """End training at the next batch once `requested()` is true."""

    async_safe = True  # Keras runs batch hooks off the training loop's thread

    def __init__(self, requested):
        super().__init__()
        self.requested = requested

    def on_train_batch_end(self, batch, logs=None):
        if self.requested():
            self.model.stop_training = True


class ReportEpochs(keras.callbacks.Callback):
    """Report each epoch's validation accuracy to an Optuna trial, which is never pruned (the baseline's)."""

    def __init__(self, trial):
        super().__init__()
        self.trial = trial

    def on_epoch_end(self, epoch, logs=None):
        self.trial.report(float((logs or {}).get("val_accuracy", float("nan"))), step=epoch)


class EpochLogger(keras.callbacks.Callback):
    """Log each epoch's loss, accuracy, val_loss and val_accuracy through `log(metrics, step)`, the epoch as step."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def on_epoch_end(self, epoch, logs=None):
        self.log(dict(logs or {}), epoch)
