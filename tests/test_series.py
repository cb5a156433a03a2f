import math

import pytest
import sympy as sp

from harness.expansion import series

pytestmark = pytest.mark.core

x = sp.Symbol("x")
# Written independently of harness.expansion.series, in sympy's plain forms.
REFERENCE = {
    "exp": sp.exp(x),
    "softplus": sp.log(1 + sp.exp(x)),
    "log1p": sp.log(1 + x),
    "log": sp.log(x),
    "sin": sp.sin(x),
    "cos": sp.cos(x),
    "tanh": sp.tanh(x),
    "sigmoid": 1 / (1 + sp.exp(-x)),
    "gelu": x * (1 + sp.erf(x / sp.sqrt(2))) / 2,
    "swish": x / (1 + sp.exp(-x)),
}
CENTERS = {name: 1.0 if name == "log" else 0.0 for name in REFERENCE}


def series_coefficients(expression, order, center):
    expansion = sp.series(expression, x, center, order + 1).removeO()
    poly = sp.Poly(sp.expand(expansion.subs(x, x + center)), x)
    return [float(poly.coeff_monomial(x**k)) for k in range(order + 1)]


@pytest.mark.parametrize("name", REFERENCE)
def test_coefficients_equal_sympy_series_up_to_order_12(name):
    reference = series_coefficients(REFERENCE[name], 12, CENTERS[name])
    for order in range(13):
        assert series.coefficients(name, order, CENTERS[name]) == pytest.approx(
            reference[: order + 1], abs=1e-12, rel=1e-12
        )


@pytest.mark.parametrize("name,center", [("softplus", 0.5), ("tanh", -0.3), ("log", 2.0), ("gelu", 1.0)])
def test_coefficients_around_other_centers(name, center):
    reference = series_coefficients(REFERENCE[name], 6, sp.nsimplify(center))
    assert series.coefficients(name, 6, center) == pytest.approx(reference, abs=1e-12, rel=1e-12)


def test_softplus_rationals_are_exact():
    c = series.coefficients("softplus", 4)
    assert c == (math.log(2), 0.5, 0.125, 0.0, -1 / 192)


@pytest.mark.parametrize(
    "name,center,radius",
    [
        ("softplus", 0.0, math.pi),
        ("tanh", 0.0, math.pi / 2),
        ("sigmoid", 0.0, math.pi),
        ("log1p", 0.0, 1.0),
        ("log", 2.5, 2.5),
        ("exp", 0.0, math.inf),
        ("sin", 0.0, math.inf),
        ("cos", 3.0, math.inf),
        ("softplus", 1.0, math.hypot(1.0, math.pi)),
    ],
)
def test_radius_of_convergence(name, center, radius):
    assert series.radius_of_convergence(name, center) == pytest.approx(radius)


@pytest.mark.parametrize(
    "args,message",
    [
        (("log", 3, 0.0), "log1p"),
        (("log", 3, -1.0), "center > 0"),
        (("relu", 3, 0.0), "unknown function 'relu'"),
        (("exp", -1, 0.0), "between 0 and 20"),
        (("exp", 21, 0.0), "between 0 and 20"),
        (("exp", 2.5, 0.0), "integer"),
        (("__import__('os').system('true')", 2, 0.0), "unknown function"),
    ],
)
def test_bad_arguments_raise_clear_errors(args, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        series.coefficients(*args)


def test_order_20_is_fast_for_every_function():
    for name in series.FUNCTIONS:
        assert len(series.coefficients(name, 20, 1.0 if name == "log" else 0.5)) == 21


def test_evaluate_matches_the_series_near_the_center():
    import numpy as np

    points = np.linspace(-0.5, 0.5, 11)
    for name in ("softplus", "gelu", "swish", "sigmoid", "tanh"):
        assert np.allclose(series.evaluate(name, points), series.evaluate_series(name, 10, points), atol=1e-6)
