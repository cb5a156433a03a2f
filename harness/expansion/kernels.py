"""The polynomial math of `TaylorExpansion`, on every Keras backend: Horner's rule, the expansion into terms or
partial sums, and on TensorFlow (`FUSED_BACKENDS`) XLA-fused kernels with a hand-written gradient.

Keras runs TensorFlow models without XLA on CPU, where each op of a Horner loop
would be a separate pass over memory; elsewhere (JAX and PyTorch compile whole
training steps) the same plain ops are differentiated by the backend, with the
same numbers (a test compares the two).
"""

import keras
import numpy as np
from keras import ops

FUSED_BACKENDS = ("tensorflow",)  # where `fused=True` takes the hand-written XLA kernels


def _xla_compiled(function):
    """Compile elementwise math into one fused kernel on TensorFlow.

    Keras runs TensorFlow models without XLA on CPU, where each op of a
    Horner loop would be a separate pass over memory.
    """
    if keras.backend.backend() not in FUSED_BACKENDS:
        return function
    import tensorflow as tf

    return tf.function(function, jit_compile=True, autograph=False)


def horner(u, a):
    """Evaluate sum_j a[j] u^j; a[j] is a scalar or broadcasts over u's last axis."""
    if a.shape[0] == 1:
        return a[0] * ops.ones_like(u)
    y = a[-1] * u + a[-2]
    for j in range(a.shape[0] - 3, -1, -1):
        y = y * u + a[j]
    return y


def _derivative_coefficients(a):
    powers = ops.arange(1, a.shape[0], dtype=a.dtype)
    return a[1:] * ops.reshape(powers, (-1,) + (1,) * (len(a.shape) - 1))


def _polynomial_derivative(u, a):
    if a.shape[0] == 1:
        return ops.zeros_like(u)
    return horner(u, _derivative_coefficients(a))


def _block_rows(units):
    """Rows per block in `_block_power_sums`: 16, or 8 above 256 units.

    Enough rows to keep the (blocks, p + 1, units) partial sums small, few
    enough that a block's upstream and u rows (8 bytes per unit and row) stay
    in a 32 KiB L1 cache while each power re-reads them: at 512 units, blocks
    of 16 rows cost about 1.8x blocks of 8; at 32 units the two cost the same.
    """
    return 16 if units <= 256 else 8


def _row_blocks(x, columns, rows):
    """View x as (blocks, rows, 1, *columns), zero-padding the last block."""
    x = ops.reshape(x, (-1,) + columns)
    padding = (-ops.shape(x)[0]) % rows
    x = ops.pad(x, [(0, padding)] + [(0, 0)] * len(columns))
    return ops.reshape(x, (-1, rows, 1) + columns)


def _vandermonde(u, count):
    """(1, u, ..., u^(count-1)) stacked along axis 1."""
    powers = [ops.ones_like(u)]
    for _ in range(1, count):
        powers.append(powers[-1] * u)
    return ops.concatenate(powers, axis=1)


def _block_power_sums(upstream, u, a):
    """upstream * u^j summed over each block of rows: (blocks, p + 1, *units).

    Why this form: XLA on CPU turns a column reduction of upstream * u^j into
    one reduction per power, each re-reading (or first materialising) the
    products, which made the gradient 3-4x a ReLU. Adding up a block's row
    slices instead keeps every op elementwise over (blocks, p + 1, units): one
    vectorised loop over the units that reads each block while it is in cache
    and writes a fraction of the input; `_sum_blocks` adds the blocks up.
    """
    # Shared coefficients sum over the units too; keep them as columns here.
    columns = tuple(a.shape[1:]) or (u.shape[-1] or 1,)
    rows = _block_rows(int(np.prod(columns)))
    upstream, u = _row_blocks(upstream, columns, rows), _row_blocks(u, columns, rows)
    # A single running sum: LLVM vectorises this form (a tree of adds it did not).
    block_sum = upstream[:, 0] * _vandermonde(u[:, 0], a.shape[0])
    for row in range(1, rows):
        block_sum = block_sum + upstream[:, row] * _vandermonde(u[:, row], a.shape[0])
    return block_sum


def _sum_blocks(block_sums, a):
    """d(loss)/d(a) from `_block_power_sums`."""
    sums = ops.sum(block_sums, axis=0)
    return sums if len(a.shape) > 1 else ops.sum(sums, axis=1)


_fused_horner = _xla_compiled(horner)


@_xla_compiled
def _fused_input_gradient(upstream, u, a):
    return upstream * _polynomial_derivative(u, a)


@_xla_compiled
def _fused_power_sums(upstream, u, a):
    """d(loss)/d(a), and the block sums it was added up from."""
    block_sums = _block_power_sums(upstream, u, a)
    # Returning the block sums as well keeps them a buffer of their own: when
    # there are few blocks, XLA would otherwise fuse the final sum into the
    # block loop, where it becomes a scalar loop several times slower.
    return _sum_blocks(block_sums, a), block_sums


def _fused_gradients(upstream, u, a):
    """Input and coefficient gradients as two independent XLA kernels.

    Kept apart so that TensorFlow can run them at the same time, one per core
    (XLA runs the fusions of one kernel one after the other).
    """
    return _fused_input_gradient(upstream, u, a), _fused_power_sums(upstream, u, a)[0]


def fused_polynomial(u, a, coefficients_need_gradient):
    """Horner's rule with a hand-written gradient, both directions fused XLA kernels."""
    if coefficients_need_gradient:

        @ops.custom_gradient
        def polynomial(u, a):
            def grad(*args, upstream=None):
                return _fused_gradients(args[0] if upstream is None else upstream, u, a)

            return _fused_horner(u, a), grad

        return polynomial(u, a)

    @ops.custom_gradient
    def fixed_polynomial(u):
        def grad(*args, upstream=None):
            return _fused_input_gradient(args[0] if upstream is None else upstream, u, a)

        return _fused_horner(u, a), grad

    return fixed_polynomial(u)


POWER_BASES = ("scaled", "monomial")  # evaluated by Horner's rule (and fused on TensorFlow)


def polynomial(t, a, basis, *, fused, coefficients_need_gradient):
    """sum_k a[k] B_k(t) in `basis`: the power bases by Horner's rule, fused on TensorFlow if `fused`."""
    if basis not in POWER_BASES:
        return basis_sum(t, a, basis)
    if not fused or keras.backend.backend() not in FUSED_BACKENDS:
        return horner(t, a)
    return fused_polynomial(t, a, coefficients_need_gradient)


def scale_gradient(value, scale):
    """`value` itself, whose gradient is multiplied by `scale`."""
    if scale == 1.0:
        return value
    frozen = ops.stop_gradient(value)
    return frozen + (value - frozen) * scale


def basis_terms(t, count, basis):
    """B_0(t) .. B_(count-1)(t): powers for "monomial" and "scaled", else Chebyshev T_k or Legendre P_k by their
    three-term recurrences (T_(k+1) = 2t T_k - T_(k-1); (k+1) P_(k+1) = (2k+1) t P_k - k P_(k-1))."""
    terms = [ops.ones_like(t), t][:count]
    for k in range(1, count - 1):
        if basis == "chebyshev":
            terms.append(2 * t * terms[k] - terms[k - 1])
        elif basis == "legendre":
            terms.append(((2 * k + 1) * t * terms[k] - k * terms[k - 1]) / (k + 1))
        else:
            terms.append(terms[k] * t)
    return terms


def basis_sum(t, a, basis):
    """sum_k a[k] B_k(t), for the orthogonal bases (the power bases take `horner`)."""
    y = 0
    for k, term in enumerate(basis_terms(t, a.shape[0], basis)):
        y = y + a[k] * term
    return y


def expand(t, a, outputs="terms", basis="monomial"):
    """Each value of `t` as p + 1 values along the last axis: its terms a_k B_k(t), or their partial sums."""
    stacked = ops.stack([a[k] * term for k, term in enumerate(basis_terms(t, a.shape[0], basis))], axis=-1)
    if outputs == "partial_sums":
        stacked = ops.cumsum(stacked, axis=-1)
    return ops.reshape(stacked, (-1,) + tuple(t.shape[1:-1]) + (t.shape[-1] * a.shape[0],))
