"""Taylor series of the activation functions the harness can expand.

Coefficients c_k = f^(k)(x0) / k! are derived exactly with sympy and cached;
only names from `FUNCTIONS` are ever turned into expressions.
"""

import dataclasses
import functools
import math

import numpy as np
import sympy as sp

from harness.params import FUNCTIONS as FUNCTION_NAMES
from harness.params import Function
from harness.params import check_value, did_you_mean

_x = sp.Symbol("x", real=True)


@dataclasses.dataclass(frozen=True)
class SeriesFunction:
    """A function, with the singularities nearest the real axis.

    The radius of convergence around a real center is its distance to the
    nearest singularity in the complex plane. A real singularity also bounds
    the domain: the center must lie to its right.
    """

    expression: sp.Expr
    singularities: tuple[complex, ...] = ()

    def radius(self, center):
        if not self.singularities:
            return math.inf
        return min(abs(s - center) for s in self.singularities)


class Sigmoid(sp.Function):
    """1 / (1 + e^-x), whose derivative s (1 - s) keeps every higher derivative a
    polynomial in s: differentiating the plain exp form swells without bound."""

    def fdiff(self, argindex=1):
        return self * (1 - self)

    @classmethod
    def eval(cls, arg):
        if arg.is_Number:
            return 1 / (1 + sp.exp(-arg))


class Softplus(sp.Function):
    """log(1 + e^x), whose derivative is the sigmoid."""

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0])

    @classmethod
    def eval(cls, arg):
        if arg.is_Number:
            return sp.log(1 + sp.exp(arg))


# Keyed by `params.Function`: the type checker rejects a name the vocabulary lacks, the assert one it has and this lacks.
FUNCTIONS: dict[Function, SeriesFunction] = {
    "exp": SeriesFunction(sp.exp(_x)),
    "softplus": SeriesFunction(Softplus(_x), (math.pi * 1j,)),
    "log1p": SeriesFunction(sp.log(1 + _x), (-1.0,)),
    "log": SeriesFunction(sp.log(_x), (0.0,)),
    "sin": SeriesFunction(sp.sin(_x)),
    "cos": SeriesFunction(sp.cos(_x)),
    "tanh": SeriesFunction(sp.tanh(_x), (math.pi / 2 * 1j,)),
    "sigmoid": SeriesFunction(Sigmoid(_x), (math.pi * 1j,)),
    "gelu": SeriesFunction(_x * (1 + sp.erf(_x / sp.sqrt(2))) / 2),
    "swish": SeriesFunction(_x * Sigmoid(_x), (math.pi * 1j,)),
}
assert tuple(FUNCTIONS) == FUNCTION_NAMES, "harness.params.FUNCTIONS names the series defined here"


def _lookup(function, center):
    """Return the `SeriesFunction` for a name, checking it has a series at `center`."""
    if function not in FUNCTIONS:
        raise ValueError(
            f"unknown function {function!r}{did_you_mean(function, FUNCTIONS)}; choose one of {', '.join(FUNCTIONS)}"
        )
    spec = FUNCTIONS[function]
    for singularity in spec.singularities:
        if singularity.imag == 0 and center <= singularity.real:
            hint = " use 'log1p' (log(1 + x)) or a center > 0" if function == "log" else ""
            raise ValueError(
                f"{function} has no Taylor series around {center}: it is singular at "
                f"x = {singularity.real:g} and undefined to its left;{hint or ' pick a center to its right'}"
            )
    return spec


def coefficients(function, order, center=0.0):
    """Return the floats c_0..c_order of `function`'s Taylor series around `center`."""
    check_value("order", order)  # the one rule for an order: the space's, the CLI's and the layer's
    _lookup(function, float(center))
    return _coefficients(function, int(order), float(center))


@functools.lru_cache(maxsize=None)
def _coefficients(function, order, center):
    # A rational center keeps values such as log 2 and -1/192 exact until the final float().
    point = sp.nsimplify(center, rational=True)
    derivative = FUNCTIONS[function].expression
    values = []
    for k in range(order + 1):
        value = derivative.subs(_x, point) / sp.factorial(k)
        values.append(float(sp.N(value, 30)))
        # Multiplying out products (not powers of sums) keeps each derivative a short
        # sum instead of a growing tree.
        derivative = sp.expand(sp.diff(derivative, _x), multinomial=False)
    return tuple(values)


def radius_of_convergence(function, center=0.0):
    """Distance from `center` to `function`'s nearest complex singularity (inf if entire)."""
    return _lookup(function, float(center)).radius(float(center))


def default_limit(function, center=0.0, *, fraction=0.9, entire_limit=3.0):
    """How far from the center inputs are allowed by the clip and tanh conditionings.

    A fraction of the radius keeps the truncated series convergent. An entire
    function converges everywhere, but a low-order truncation strays far from it
    beyond a few units, so it gets `entire_limit`.
    """
    radius = radius_of_convergence(function, center)
    return entire_limit if math.isinf(radius) else fraction * radius


def evaluate(function, x):
    """Evaluate `function` itself on a numpy array (for plots against its series)."""
    from scipy.special import erf, expit

    numeric = {"erf": erf, "Sigmoid": expit, "Softplus": lambda v: np.logaddexp(0, v)}
    return sp.lambdify(_x, FUNCTIONS[function].expression, modules=[numeric, "numpy"])(x)


def evaluate_series(function, order, x, center=0.0):
    """Evaluate the truncated series s_order on a numpy array."""
    return np.polynomial.polynomial.polyval(np.asarray(x) - center, coefficients(function, order, center))


def basis_weights(coefficients, basis, limit):
    """The weights of the polynomial sum_k c_k u^k in `basis` on t = u / limit (numpy's conversions).

    "monomial" keeps c_k; "scaled" gives c_k limit^k, the weights of t^k; "chebyshev" and "legendre" re-express
    those in T_k(t) and P_k(t). Where |t| <= 1 every basis term is bounded by 1, so a weight's size says how much
    it contributes.
    """
    if basis == "monomial":
        return np.asarray(coefficients, dtype=float)
    scaled = np.asarray(coefficients, dtype=float) * float(limit) ** np.arange(len(coefficients))
    convert = {"chebyshev": np.polynomial.chebyshev.poly2cheb, "legendre": np.polynomial.legendre.poly2leg}.get(basis)
    if convert is None:
        return scaled
    weights = np.zeros_like(scaled)
    converted = convert(scaled)  # numpy trims trailing zero weights (softplus's c_3)
    weights[: len(converted)] = converted
    return weights
