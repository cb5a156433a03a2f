"""`TaylorExpansion`: a truncated Taylor series as a Keras layer.

With u = x - x0, t_k = c_k u^k and partial sums s_k = t_0 + ... + t_k:

- ``series``:   y = s_p(u)
- ``weighted``: y = sum_k w_k s_k(u) = sum_j c_j (w_j + ... + w_p) u^j
- ``expand``:   the last axis grows by p + 1, one output per term (or per partial sum)

``series`` and ``weighted`` are one polynomial in u with effective
coefficients, evaluated by Horner's rule; no tensor of all powers is built.

The layer runs on every Keras backend through `keras.ops`; its polynomial math,
with the fused fast path on TensorFlow, is `harness.expansion.kernels`.
"""

import keras
import numpy as np
from keras import ops

from harness.expansion import series
from harness.expansion.kernels import FUSED_BACKENDS, expand, fused_polynomial, horner
from harness.params import COEFFICIENTS, CONDITIONINGS, EXPAND_OUTPUTS, MODES, check_choice


@keras.saving.register_keras_serializable(package="harness")
class TaylorExpansion(keras.layers.Layer):
    """Replace or expand each value by a truncated Taylor series of `function`.

    Args:
        function, order: a name from `harness.expansion.series.FUNCTIONS` ("softplus", "exp", ...); the highest power p.
        center: the expansion point x0 (0 is the Maclaurin series).
        mode: "series", "weighted" or "expand" (see the module docstring).
        coefficients: "fixed" keeps c_k from the series; "trainable" starts there and learns them.
        per_unit: one set of coefficients and term weights per unit (last axis), like the original answer's 1x1
            LocallyConnected layers; False shares one set.
        conditioning: how inputs are kept where the truncated series is accurate: "none", "clip" to
            |x - x0| <= limit, "tanh" to squash into (-limit, limit), or "batchnorm" to normalise them.
        expand_outputs: in "expand" mode, emit "terms" t_k or "partial_sums" s_k.
        limit: bound for "clip" and "tanh"; defaults to 0.9 of the radius of convergence (3.0 for functions whose
            series converges everywhere).
        fused: on TensorFlow, evaluate the polynomial and its gradient as XLA-fused kernels. False, or another
            backend, builds plain ops; the results are the same.

    >>> layer = TaylorExpansion("softplus", order=2)  # log 2 + x/2 + x^2/8
    >>> [round(float(v), 3) for v in ops.convert_to_numpy(layer(np.array([[0.0, 1.0]])))[0]]
    [0.693, 1.318]
    """

    def __init__(
        self,
        function="softplus",
        order=3,
        center=0.0,
        mode="series",
        coefficients="fixed",
        per_unit=False,
        conditioning="none",
        expand_outputs="terms",
        limit=None,
        fused=True,
        **kwargs,
    ):
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
        self.fused = bool(fused)
        self.normalization = keras.layers.BatchNormalization() if conditioning == "batchnorm" else None

    def build(self, input_shape):
        units = input_shape[-1]
        if units is None:
            raise ValueError("TaylorExpansion needs a known size for the last axis")
        shape = (self.order + 1, units) if self.per_unit else (self.order + 1,)
        series_values = np.array(self.series_coefficients).reshape((-1,) + (1,) * (len(shape) - 1))
        self.coefficients = self.add_weight(
            name="coefficients",
            shape=shape,
            trainable=self.coefficients_trainable,
            initializer=keras.initializers.Constant(series_values),
        )
        if self.mode == "weighted":  # w = (0, ..., 0, 1) starts the layer as the plain truncated series s_p
            last_term_only = np.zeros(shape)
            last_term_only[-1] = 1.0
            self.term_weights = self.add_weight(
                name="term_weights", shape=shape, initializer=keras.initializers.Constant(last_term_only)
            )
        if self.normalization is not None:
            self.normalization.build(input_shape)

    def call(self, inputs, training=None):
        u = self._condition(inputs, training)
        if self.mode == "expand":
            return expand(u, self._read(self.coefficients), self.expand_outputs)
        a = self._read(self.coefficients)
        if self.mode == "weighted":
            # sum_k w_k s_k = sum_j c_j W_j u^j, with W_j = w_j + ... + w_p.
            w = self._read(self.term_weights)
            a = a * ops.flip(ops.cumsum(ops.flip(w, axis=0), axis=0), axis=0)
        if not self.fused or keras.backend.backend() not in FUSED_BACKENDS:
            return horner(u, a)
        return fused_polynomial(u, a, self.coefficients_trainable or self.mode == "weighted")

    def _read(self, variable):
        # A cast reads the value: custom gradients must see tensors, not variables.
        return ops.cast(variable, self.compute_dtype)

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
        return {
            **super().get_config(),
            "function": self.function,
            "order": self.order,
            "center": self.center,
            "mode": self.mode,
            "coefficients": "trainable" if self.coefficients_trainable else "fixed",
            "per_unit": self.per_unit,
            "conditioning": self.conditioning,
            "expand_outputs": self.expand_outputs,
            "limit": self.limit,
            "fused": self.fused,
        }
