from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

from harness.expansion import series
from harness.expansion.kernels import FUSED_BACKENDS
from harness.expansion.layer import TaylorExpansion

pytestmark = pytest.mark.core
rng = np.random.default_rng(0)
ORDER = 4
# The hand-written gradients are the fused kernels'; other backends differentiate the plain ops themselves.
fused_backend = pytest.mark.skipif(
    keras.backend.backend() not in FUSED_BACKENDS, reason="the hand-written gradient is TensorFlow's fused path"
)


def numpy(tensor):
    return ops.convert_to_numpy(tensor)


def inputs_inside_radius(function, shape, center=0.0):
    radius = min(series.radius_of_convergence(function, center), 2.5)
    return (center + rng.uniform(-0.8 * radius, 0.8 * radius, shape)).astype(np.float32)


def randomise(layer):
    """Give every unit its own coefficients and weights, so per-unit paths are exercised."""
    for variable in layer.weights:
        variable.assign(variable.numpy() * rng.uniform(0.5, 1.5, variable.shape) + rng.normal(0, 0.1, variable.shape))


BASIS_POLYNOMIALS = {
    "monomial": np.polynomial.Polynomial,
    "scaled": np.polynomial.Polynomial,
    "chebyshev": np.polynomial.Chebyshev,
    "legendre": np.polynomial.Legendre,
}


def reference(layer, x):
    """The layer's output in numpy float64, term by term (the definition, not Horner), its basis from numpy."""
    u = x.astype(np.float64) - layer.center
    t = u if layer.basis == "monomial" else u / layer.limit
    c = layer.coefficients.numpy().astype(np.float64)  # (p+1,) or (p+1, units)
    terms = np.stack([c[k] * BASIS_POLYNOMIALS[layer.basis].basis(k)(t) for k in range(layer.order + 1)], axis=-1)
    partial_sums = np.cumsum(terms, axis=-1)
    if layer.mode == "series":
        return partial_sums[..., -1]
    if layer.mode == "weighted":
        w = layer.term_weights.numpy().astype(np.float64)
        return np.sum(partial_sums * np.moveaxis(w, 0, -1), axis=-1)
    outputs = terms if layer.expand_outputs == "terms" else partial_sums
    return outputs.reshape(x.shape[:-1] + (-1,))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("per_unit", [False, True])
@pytest.mark.parametrize(
    "mode,expand_outputs", [("series", "terms"), ("weighted", "terms"), ("expand", "terms"), ("expand", "partial_sums")]
)
@pytest.mark.parametrize("shape", [(16, 24), (4, 5, 5, 3)])
def test_output_matches_numpy_float64(mode, expand_outputs, per_unit, fused, shape):
    layer = TaylorExpansion(
        "softplus",
        ORDER,
        mode=mode,
        expand_outputs=expand_outputs,
        per_unit=per_unit,
        coefficients="trainable",
        fused=fused,
    )
    x = inputs_inside_radius("softplus", shape)
    layer.build(shape)
    randomise(layer)
    np.testing.assert_allclose(numpy(layer(x)), reference(layer, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("basis", ["monomial", "chebyshev", "legendre"])
@pytest.mark.parametrize("mode", ["series", "weighted", "expand"])
def test_every_basis_matches_numpy_float64_once_trained(basis, mode):
    layer = TaylorExpansion("softplus", ORDER, mode=mode, per_unit=True, coefficients="trainable", basis=basis)
    x = inputs_inside_radius("softplus", (6, 5, 4))
    layer.build(x.shape)
    randomise(layer)
    np.testing.assert_allclose(numpy(layer(x)), reference(layer, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("basis", ["scaled", "chebyshev", "legendre", "monomial"])
@pytest.mark.parametrize("mode", ["series", "weighted", "expand"])
@pytest.mark.parametrize("order", [3, 12])  # softplus's c_3 is 0: a trailing zero weight
def test_every_basis_starts_as_the_series(basis, mode, order):
    """The weights are the series' own, converted: the layer is sympy's series, in float32's precision."""
    layer = TaylorExpansion("softplus", order, mode=mode, basis=basis, coefficients="trainable")
    x = np.linspace(-layer.limit, layer.limit, 64, dtype=np.float32).reshape(2, 32)
    expected = series.evaluate_series("softplus", order, x.astype(np.float64))  # c_k from sympy's derivatives
    got = numpy(layer(x))
    if mode == "expand":
        got = got.reshape(2, 32, order + 1).sum(axis=-1)
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-6 * np.abs(expected).max())


def test_the_mean_gradient_divides_by_the_values_that_share_a_weight():
    """Same output; the coefficients' gradient is the plain one over 5 x 5 x 3 (shared) or 5 x 5 (per unit)."""
    x = inputs_inside_radius("softplus", (2, 5, 5, 3))
    for per_unit, sharing in ((False, 75), (True, 25)):
        mean, total = (
            TaylorExpansion("softplus", 3, per_unit=per_unit, coefficients="trainable", coefficient_gradient=g)
            for g in ("mean", "sum")
        )
        np.testing.assert_array_equal(numpy(mean(x)), numpy(total(x)))
        gradients = [backend_gradient(layer, x) for layer in (mean, total)]
        np.testing.assert_allclose(gradients[0] * sharing, gradients[1], rtol=1e-5)


def backend_gradient(layer, x):
    """d(sum of the layer's output)/d(coefficients), by the backend's own autodiff."""
    backend = keras.backend.backend()
    variable = layer.coefficients
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            total = tf.reduce_sum(layer(x))
        return tape.gradient(total, variable.value).numpy()
    if backend == "jax":
        import jax

        def total(value):
            outputs, _ = layer.stateless_call([value], [], x)
            return outputs.sum()

        return np.asarray(jax.grad(total)(variable.value))
    pytest.skip(f"no gradient helper for {backend}")


@pytest.mark.parametrize("function,center", [("exp", 0.0), ("tanh", 0.0), ("log", 1.0), ("gelu", 0.5), ("sin", 0.0)])
def test_series_mode_is_the_truncated_series(function, center):
    layer = TaylorExpansion(function, 6, center=center)
    x = inputs_inside_radius(function, (8, 10), center)
    expected = series.evaluate_series(function, 6, x.astype(np.float64), center)
    np.testing.assert_allclose(numpy(layer(x)), expected, rtol=1e-5, atol=1e-6)


def test_expand_grows_the_last_axis():
    layer = TaylorExpansion("softplus", 3, mode="expand")
    assert layer(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 32, 32, 12)
    assert layer(np.zeros((5, 512), np.float32)).shape == (5, 2048)
    assert layer.compute_output_shape((None, 32, 32, 3)) == (None, 32, 32, 12)


def test_weighted_mode_starts_as_the_plain_series():
    weighted = TaylorExpansion("softplus", ORDER, mode="weighted")
    plain = TaylorExpansion("softplus", ORDER, mode="series")
    x = inputs_inside_radius("softplus", (8, 16))
    np.testing.assert_allclose(numpy(weighted(x)), numpy(plain(x)), rtol=1e-6)


def original_answer(x, alpha, w):
    """The first answer's computation in numpy: tile, pow, alpha, cumsum, w, sum."""
    order = alpha.shape[-1] - 1
    x_p = np.power(np.tile(x[..., None], (1, 1, order + 1)), np.arange(order + 1))
    h = x_p * alpha  # LocallyConnected2D 1x1: one alpha per unit and power
    s = np.cumsum(h, axis=-1)
    return np.sum(s * w, axis=-1)  # LocallyConnected2D 1x1, then the sum


@pytest.mark.parametrize("fused", [True, False])
def test_weighted_per_unit_equals_the_original_answer(fused):
    units = 512
    alpha = rng.normal(0, 0.5, (units, ORDER + 1))
    w = rng.normal(0, 0.5, (units, ORDER + 1))
    x = rng.uniform(-1.5, 1.5, (32, units)).astype(np.float32)
    layer = TaylorExpansion(
        "softplus", ORDER, mode="weighted", per_unit=True, coefficients="trainable", basis="monomial", fused=fused
    )
    layer.build(x.shape)
    layer.coefficients.assign(alpha.T)
    layer.term_weights.assign(w.T)
    np.testing.assert_allclose(numpy(layer(x)), original_answer(x.astype(np.float64), alpha, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conditioning", ["clip", "tanh"])
def test_conditioning_bounds_the_series_input(conditioning):
    layer = TaylorExpansion("softplus", ORDER, conditioning=conditioning)
    limit = 0.9 * np.pi
    assert layer.limit == pytest.approx(limit)
    x = np.linspace(-10, 10, 41, dtype=np.float32)[None, :]
    u = np.clip(x, -limit, limit) if conditioning == "clip" else limit * np.tanh(x / limit)
    expected = np.polynomial.polynomial.polyval(u.astype(np.float64), series.coefficients("softplus", ORDER))
    np.testing.assert_allclose(numpy(layer(x)), expected, rtol=1e-5, atol=1e-6)


def test_batchnorm_conditioning_normalises_in_training():
    layer = TaylorExpansion("exp", 2, conditioning="batchnorm")
    x = rng.normal(50, 10, (256, 4)).astype(np.float32)
    y = numpy(layer(x, training=True))
    u = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3)
    np.testing.assert_allclose(y, 1 + u + u**2 / 2, rtol=1e-3, atol=1e-3)


def numeric_gradient(loss, variable, eps=1e-6):
    values = variable.numpy()
    gradient = np.zeros_like(values)
    for index in np.ndindex(values.shape):
        shifted = values.copy()
        shifted[index] += eps
        variable.assign(shifted)
        up = loss()
        shifted[index] -= 2 * eps
        variable.assign(shifted)
        down = loss()
        gradient[index] = (up - down) / (2 * eps)
    variable.assign(values)
    return gradient


@fused_backend
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("mode,per_unit", [("series", False), ("series", True), ("weighted", True), ("expand", True)])
def test_gradients_match_finite_differences(mode, per_unit, fused):
    import tensorflow as tf

    layer = TaylorExpansion(
        "softplus",
        3,
        mode=mode,
        per_unit=per_unit,
        coefficients="trainable",
        conditioning="tanh",
        coefficient_gradient="sum",  # the plain gradient, which finite differences measure
        fused=fused,
        dtype="float64",
    )
    x = tf.Variable(rng.uniform(-2, 2, (3, 4)))
    layer.build(x.shape)
    randomise(layer)
    target = rng.normal(size=layer.compute_output_shape(x.shape))

    def loss():
        return float(tf.reduce_sum(layer(x) * target))

    with tf.GradientTape() as tape:
        value = tf.reduce_sum(layer(x) * target)
    variables = [x, *layer.trainable_weights]
    for variable, gradient in zip(variables, tape.gradient(value, variables)):
        np.testing.assert_allclose(gradient.numpy(), numeric_gradient(loss, variable), rtol=1e-5, atol=1e-7)


@fused_backend
@pytest.mark.parametrize("per_unit", [False, True])
@pytest.mark.parametrize("shape", [(37, 5), (3, 7, 300)])
def test_fused_gradients_match_plain_ops(per_unit, shape):
    """Row counts that leave a partial block, and a layer wide enough for shorter blocks."""
    import tensorflow as tf

    fused, plain = (
        TaylorExpansion("softplus", ORDER, mode="weighted", per_unit=per_unit, coefficients="trainable", fused=f)
        for f in (True, False)
    )
    fused.build(shape)
    plain.build(shape)
    randomise(fused)
    for source, copy in zip(fused.weights, plain.weights):
        copy.assign(source)
    x = tf.constant(inputs_inside_radius("softplus", shape))
    target = rng.normal(size=shape).astype(np.float32)

    def gradients(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * target)
        return tape.gradient(loss, [x, *layer.trainable_weights])

    for got, expected in zip(gradients(fused), gradients(plain)):
        scale = np.abs(expected.numpy()).max()
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5 * scale)


def test_fixed_coefficients_are_not_trained():
    layer = TaylorExpansion("softplus", 3, coefficients="fixed", mode="weighted")
    layer.build((None, 8))
    assert [w.name for w in layer.trainable_weights] == ["term_weights"]
    assert [w.name for w in layer.non_trainable_weights] == ["coefficients"]


def test_config_round_trip_and_saving(tmp_path):
    layer = TaylorExpansion(
        "tanh", 5, center=0.25, mode="weighted", per_unit=True, coefficients="trainable", conditioning="clip"
    )
    assert TaylorExpansion.from_config(layer.get_config()).get_config() == layer.get_config()
    model = keras.Sequential([keras.Input((6,)), layer])
    randomise(layer)
    path = tmp_path / "layer.keras"
    model.save(path)
    restored = keras.saving.load_model(path)  # no custom_objects: the layer is registered
    x = inputs_inside_radius("tanh", (4, 6), 0.25)
    np.testing.assert_array_equal(numpy(restored(x)), numpy(model(x)))


def test_a_model_saved_before_bases_loads_with_the_same_outputs():
    """tests/data/expansion-before-bases.keras was saved by the layer of commit c642dde (raw coefficients, no
    basis in its config), with its outputs on fixed inputs."""
    data = Path(__file__).parent / "data"
    model = keras.saving.load_model(data / "expansion-before-bases.keras")
    assert [layer.basis for layer in model.layers[1:]] == ["monomial", "monomial"]
    assert [layer.coefficient_gradient for layer in model.layers[1:]] == ["sum", "sum"]
    saved = np.load(data / "expansion-before-bases.npz")
    np.testing.assert_allclose(numpy(model(saved["x"])), saved["y"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"mode": "sum"}, "mode must be one of"),
        ({"coefficients": "learned"}, "coefficients must be one of"),
        ({"conditioning": "sigmoid"}, "conditioning must be one of"),
        ({"function": "log"}, "log1p"),
        ({"order": 25}, "between 0 and 20"),
        ({"limit": -1.0}, "limit must be positive"),
        ({"basis": "hermite"}, "basis must be one of"),
        ({"coefficient_gradient": "max"}, "coefficient_gradient must be one of"),
    ],
)
def test_bad_arguments_raise_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaylorExpansion(**kwargs)
