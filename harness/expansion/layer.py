"""`TaylorExpansion`: a truncated Taylor series as a Keras layer.

With u = x - x0, t_k = c_k u^k and partial sums s_k = t_0 + ... + t_k:

- ``series``:   y = s_p(u)
- ``weighted``: y = sum_k w_k s_k(u) = sum_j c_j (w_j + ... + w_p) u^j
- ``expand``:   the last axis grows by p + 1, one output per term (or per partial sum)

The trainable weights live in a ``basis`` on t = u / limit: "scaled" (t^k),
"chebyshev" (T_k(t)) or "legendre" (P_k(t)), each term bounded by 1 where the
conditioning keeps |t| <= 1, so no weight's gradient is a power of the limit
(with raw powers u^k, the gradient of c_4 is 81 times its input's at limit 3);
"monomial" keeps the raw c_k of layers saved before bases existed. Every basis
starts as the same series: its weights are the series' own, converted.
``series`` and ``weighted`` in the power bases are one polynomial with
effective coefficients, evaluated by Horner's rule; no tensor of all powers is
built.

The layer runs on every Keras backend through `keras.ops`; its polynomial math,
with the fused fast path on TensorFlow, is `harness.expansion.kernels`.
"""

from typing import Any

import keras
import numpy as np
from keras import ops

from harness.expansion import series
from harness.expansion.kernels import expand, polynomial, scale_gradient
from harness.params import (
    BASES,
    COEFFICIENT_GRADIENTS,
    COEFFICIENTS,
    CONDITIONINGS,
    EXPAND_OUTPUTS,
    LAYER_KEYS,
    MODES,
    Basis,
    CoefficientGradient,
    Coefficients,
    Conditioning,
    ExpandOutputs,
    Function,
    Mode,
    check_choice,
)


@keras.saving.register_keras_serializable(package="harness")
class TaylorExpansion(keras.layers.Layer):
    """Replace or expand each value by a truncated Taylor series of `function`.

    Args:
        function, order, center: a name from `series.FUNCTIONS`, the highest power p, the point x0 (0: Maclaurin).
        mode: "series", "weighted" or "expand" (see the module docstring).
        coefficients: "fixed" keeps c_k from the series; "trainable" starts there and learns them.
        per_unit: one set of weights per unit (last axis), like the original answer's 1x1 LocallyConnected layers.
        conditioning: "none", "clip" to |x - x0| <= limit, "tanh" to squash into (-limit, limit), or "batchnorm".
        expand_outputs: in "expand" mode, emit "terms" t_k or "partial_sums" s_k.
        limit: for "clip", "tanh" and the basis; 0.9 of the radius of convergence (3.0 where it is infinite).
        basis: the basis of the weights on t = (x - x0) / limit (see the module docstring).
        coefficient_gradient: "mean" divides a weight's gradient by the values of one example sharing it (16,384
            for a shared weight after a 32x32x16 map), so its step does not grow with the layer; "sum": plain.
        fused: on TensorFlow, the polynomial and its gradient as XLA-fused kernels (the same results).

    >>> layer = TaylorExpansion("softplus", order=2)  # log 2 + x/2 + x^2/8
    >>> [round(float(v), 3) for v in ops.convert_to_numpy(layer(np.array([[0.0, 1.0]])))[0]]
    [0.693, 1.318]
    """

    def __init__(
        self,
        function: Function = "softplus",
        order: int = 3,
        center: float = 0.0,
        mode: Mode = "series",
        coefficients: Coefficients = "fixed",
        per_unit: bool = False,
        conditioning: Conditioning = "none",
        expand_outputs: ExpandOutputs = "terms",
        limit: float | None = None,
        basis: Basis = "scaled",
        coefficient_gradient: CoefficientGradient = "mean",
        fused: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.series_coefficients = series.coefficients(function, order, center)
        self.function = function
        self.order = int(order)
        self.center = float(center)
        self.mode = check_choice("mode", mode, MODES)
        self.coefficients_trainable = check_choice("coefficients", coefficients, COEFFICIENTS) == "trainable"
        self.per_unit = bool(per_unit)
        self.conditioning = check_choice("conditioning", conditioning, CONDITIONINGS)
        self.expand_outputs = check_choice("expand_outputs", expand_outputs, EXPAND_OUTPUTS)
        if limit is not None and not limit > 0:
            raise ValueError(f"limit must be positive, got {limit!r}")
        self.limit = float(limit) if limit is not None else series.default_limit(function, center)
        self.basis = check_choice("basis", basis, BASES)
        self.coefficient_gradient = check_choice("coefficient_gradient", coefficient_gradient, COEFFICIENT_GRADIENTS)
        self.fused = bool(fused)
        self.normalization = keras.layers.BatchNormalization() if conditioning == "batchnorm" else None

    def build(self, input_shape):
        units = input_shape[-1]
        if units is None:
            raise ValueError("TaylorExpansion needs a known size for the last axis")
        shape = (self.order + 1, units) if self.per_unit else (self.order + 1,)
        weights = series.basis_weights(self.series_coefficients, self.basis, self.limit)
        series_values = weights.reshape((-1,) + (1,) * (len(shape) - 1))
        mean = self.coefficient_gradient == "mean"
        self.gradient_scale = 1.0 / _values_per_weight(input_shape, self.per_unit) if mean else 1.0
        self.coefficients = self.add_weight(
            name="coefficients",
            shape=shape,
            trainable=self.coefficients_trainable,
            initializer=keras.initializers.Constant(series_values),
        )
        if self.mode == "weighted":  # w = (0, ..., 0, 1) starts the layer as the plain truncated series s_p
            last_term_only = np.eye(self.order + 1)[-1].reshape(series_values.shape)
            self.term_weights = self.add_weight(
                name="term_weights", shape=shape, initializer=keras.initializers.Constant(last_term_only)
            )
        if self.normalization is not None:
            self.normalization.build(input_shape)

    def call(self, inputs, training=None):
        u = self._condition(inputs, training)
        t = u if self.basis == "monomial" else u / self.limit
        a = self._read(self.coefficients)
        if self.mode == "expand":
            return expand(t, a, self.expand_outputs, self.basis)
        if self.mode == "weighted":
            # sum_k w_k s_k = sum_j c_j W_j B_j(t), with W_j = w_j + ... + w_p.
            w = self._read(self.term_weights)
            a = a * ops.flip(ops.cumsum(ops.flip(w, axis=0), axis=0), axis=0)
        needs_gradient = self.coefficients_trainable or self.mode == "weighted"
        return polynomial(t, a, self.basis, fused=self.fused, coefficients_need_gradient=needs_gradient)

    def _read(self, variable):
        # A cast reads the value: custom gradients must see tensors, not variables.
        value = ops.cast(variable, self.compute_dtype)
        return scale_gradient(value, self.gradient_scale) if variable.trainable else value

    def _condition(self, x, training):
        if self.conditioning == "batchnorm":
            return self.normalization(x, training=training)
        u = x - self.center
        if self.conditioning == "clip":
            return ops.clip(u, -self.limit, self.limit)
        if self.conditioning == "tanh":
            return self.limit * ops.tanh(u / self.limit)
        return u

    def compute_output_shape(self, input_shape):
        if self.mode != "expand":
            return tuple(input_shape)
        return tuple(input_shape[:-1]) + (input_shape[-1] * (self.order + 1),)

    def get_config(self):
        arguments = {key: getattr(self, key) for key in LAYER_KEYS if key != "coefficients"}
        coefficients = "trainable" if self.coefficients_trainable else "fixed"
        return {**super().get_config(), **arguments, "coefficients": coefficients, "fused": self.fused}

    @classmethod
    def from_config(cls, config):
        # A layer saved before bases existed holds raw coefficients with the plain gradient.
        return cls(**{"basis": "monomial", "coefficient_gradient": "sum", **config})


def _values_per_weight(input_shape, per_unit):
    """How many values of one example share a weight: every position, and every unit unless per unit."""
    shared_over = input_shape[1:-1] if per_unit else input_shape[1:]
    if None in shared_over:
        raise ValueError("coefficient_gradient 'mean' needs the input's sizes known; use 'sum' for any size")
    return int(np.prod(shared_over))
