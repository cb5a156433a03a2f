"""The expansion: a function's Taylor series and the Keras layer that applies it.

`series` computes the coefficients c_k = f^(k)(x0)/k! with sympy, `layer` holds
`TaylorExpansion` (its polynomial math and fused kernels in `kernels`), and `plot`
draws a series against its function. This is the
bottom of the pipeline: it imports only `harness.params`.
"""
