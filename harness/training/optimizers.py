"""The recipe's optimizers, with the expansion's weights in a group of their own and every step's norms on record.

The group is PAU's set-up (Molina et al., 2020; ml-research/pau): an activation's own parameters take no weight
decay unless asked (`coefficient_decay`), and their learning rate is the recipe's times `coefficient_lr_scale`.
Clipping the gradients' global norm (`clip_norm`) is Keras's own `global_clipnorm`, for every variable alike.

Each step also keeps, in the optimizer's own variables (so it holds inside every backend's compiled step), the
gradient norm and the value norm of each trainable variable: the latest step's, the latest step's where all were
finite, and the first step's where one was not. `divergence_site` reads them to say where a training went
non-finite first; `NormLog` logs them per epoch.
"""

import keras
import numpy as np
from keras import ops

GRADIENT, VALUE = 0, 1  # the rows of a norm record


class CoefficientGroup:
    """A Keras optimizer (this mixin comes first in its bases) with the expansion's variables in their own group,
    which records each step's norms (see the module docstring)."""

    def __init__(self, *args, coefficient_lr_scale=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.coefficient_lr_scale = float(coefficient_lr_scale)
        self.coefficient_keys = frozenset()

    def group(self, variables, *, decay=False):
        """Put `variables` in the expansion's group: the scaled learning rate, and no weight decay unless `decay`.
        Call it before the first step."""
        self.coefficient_keys = frozenset(self._var_key(v) for v in variables)
        if not decay:
            self.exclude_from_weight_decay(var_list=variables)

    def uses_weight_decay(self, variable):
        """Whether weight decay applies to `variable` (Keras's own rule, with the group's exclusions)."""
        return self.weight_decay is not None and self._use_weight_decay(variable)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        shape = (2, len(variables))
        self.norms = self.add_variable(shape, name="norms")
        self.finite_norms = self.add_variable(shape, name="finite_norms")
        self.first_nonfinite_norms = self.add_variable(shape, name="first_nonfinite_norms")
        # The step of `finite_norms` and of `first_nonfinite_norms` (-1: none yet).
        self.record_steps = self.add_variable((2,), initializer=keras.initializers.Constant(-1.0), name="record_steps")

    def update_step(self, gradient, variable, learning_rate):
        if self._var_key(variable) in self.coefficient_keys:
            learning_rate = learning_rate * self.coefficient_lr_scale
        super().update_step(gradient, variable, learning_rate)

    def apply(self, grads, trainable_variables=None):
        step = ops.cast(self.iterations, "float32")
        super().apply(grads, trainable_variables)
        if self.built:
            self._record(grads, step)

    def _record(self, grads, step):
        gradient_norms = [ops.zeros(()) if g is None else _norm(g) for g in grads]
        value_norms = [_norm(v) for v in self._trainable_variables]
        record = ops.stack([ops.stack(gradient_norms), ops.stack(value_norms)])
        finite_step, nonfinite_step = self.record_steps.value[0], self.record_steps.value[1]
        finite = ops.all(ops.isfinite(record))
        first = ops.logical_and(ops.logical_not(finite), nonfinite_step < 0)
        self.norms.assign(record)
        self.finite_norms.assign(ops.where(finite, record, self.finite_norms.value))
        self.first_nonfinite_norms.assign(ops.where(first, record, self.first_nonfinite_norms.value))
        self.record_steps.assign(
            ops.stack([ops.where(finite, step, finite_step), ops.where(first, step, nonfinite_step)])
        )

    def get_config(self):
        return {**super().get_config(), "coefficient_lr_scale": self.coefficient_lr_scale}


def _norm(x):
    return ops.sqrt(ops.sum(ops.square(ops.cast(x, "float32"))))


def _grouped(base):
    name = f"Grouped{base.__name__}"
    cls = type(name, (CoefficientGroup, base), {"__doc__": f"Keras's {base.__name__} with `CoefficientGroup`."})
    return keras.saving.register_keras_serializable(package="harness", name=name)(cls)


SGD, Adam, AdamW = (_grouped(base) for base in (keras.optimizers.SGD, keras.optimizers.Adam, keras.optimizers.AdamW))


def grouped(optimizer):
    """The `CoefficientGroup` optimizer behind `optimizer` (Keras wraps it for mixed precision), or None."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    return optimizer if isinstance(optimizer, CoefficientGroup) else None


def _paths(optimizer):
    """The recorded variables' paths ("layer/variable"), in the record's order: the variables it was built on."""
    return [v.path for v in optimizer._trainable_variables]


def norm_metrics(model, prefix="norm", record="norms"):
    """{"<prefix>/gradient/<variable path>": norm, "<prefix>/value/...": norm} from `record` of the model's optimizer
    ({} before its first step, or without a record)."""
    optimizer = grouped(model.optimizer)
    if optimizer is None or not optimizer.built:
        return {}
    values = ops.convert_to_numpy(getattr(optimizer, record))
    return {
        f"{prefix}/{kind}/{path}": float(values[row, i])
        for row, kind in ((GRADIENT, "gradient"), (VALUE, "value"))
        for i, path in enumerate(_paths(optimizer))
    }


def value_norms(model):
    """Each trainable variable's norm now, in the optimizer's order (to compare a divergence's growth with)."""
    return np.array([np.linalg.norm(ops.convert_to_numpy(v)) for v in model.trainable_variables])


def divergence_site(model, loss_step, steps_per_epoch, initial_norms):
    """Where a training whose loss went non-finite at step `loss_step` went wrong first, in words (None without a
    norm record).

    A variable whose gradient or value norm went non-finite at an earlier step, while the loss was finite, is
    named (the first in the model's order). Otherwise the forward pass overflowed with every weight finite, and
    the variable whose value norm grew the most from `initial_norms` by the last finite step is named.
    """
    optimizer = grouped(model.optimizer)
    if optimizer is None or not optimizer.built:
        return None
    paths = _paths(optimizer)
    finite_step, nonfinite_step = (int(s) for s in ops.convert_to_numpy(optimizer.record_steps))

    def when(step):
        return f"epoch {step // steps_per_epoch + 1}, batch {step % steps_per_epoch + 1}"

    if 0 <= nonfinite_step < loss_step:
        bad = ~np.isfinite(ops.convert_to_numpy(optimizer.first_nonfinite_norms))
        row, index = next((r, i) for i in range(len(paths)) for r in (GRADIENT, VALUE) if bad[r, i])
        kind = "gradient" if row == GRADIENT else "value"
        return f"first non-finite: the {kind} of {paths[index]} at {when(nonfinite_step)}"
    if finite_step < 0:
        return "non-finite from the first step"
    finite = ops.convert_to_numpy(optimizer.finite_norms)
    # relative to at least 1, so a bias that starts at 0 does not grow "infinitely"
    index = int(np.argmax(finite[VALUE] / np.maximum(initial_norms, 1.0)))
    return (
        f"every weight finite until the loss overflowed; the largest growth by {when(finite_step)}: {paths[index]}, "
        f"value norm {initial_norms[index]:.3g} -> {finite[VALUE, index]:.3g}, "
        f"gradient norm {finite[GRADIENT, index]:.3g}"
    )


class NormLog(keras.callbacks.Callback):
    """Log each variable's gradient and value norms, as the optimizer recorded them, through `log(metrics, step)`:
    at each epoch's end (step: the epoch), and at the first non-finite loss the last finite record and the first
    non-finite one (under "norm_finite/" and "norm_nonfinite/")."""

    def __init__(self, log):
        super().__init__()
        self.log = log
        self.logged_divergence = False

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)) and not self.logged_divergence:
            self.logged_divergence = True
            metrics = {
                **norm_metrics(self.model, "norm_finite", "finite_norms"),
                **norm_metrics(self.model, "norm_nonfinite", "first_nonfinite_norms"),
            }
            self.log(metrics, self.epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.log(norm_metrics(self.model), epoch)
