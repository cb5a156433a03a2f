"""The matplotlib figure a trial logs: its series against the function. Learning curves are drawn at report
time from the logged metrics."""

import functools
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness.expansion import series  # noqa: E402


def series_fit(function, order, path, center=0.0):
    """`function` against its truncated series of `order`, with the radius of convergence marked."""
    radius = series.radius_of_convergence(function, center)
    half_width = min(radius * 1.5, 4.0) if np.isfinite(radius) else 4.0
    x = np.linspace(center - half_width, center + half_width, 400)
    with np.errstate(invalid="ignore", divide="ignore"):  # log and log1p are NaN left of their domain
        exact = series.evaluate(function, x)
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    axis.plot(x, exact, "k", label=function)
    axis.plot(x, series.evaluate_series(function, order, x, center), "C1", label=f"series, order {order}")
    if np.isfinite(radius):
        for edge in (center - radius, center + radius):
            axis.axvline(edge, color="grey", linestyle=":", label=None)
    spread = np.nanmax(exact) - np.nanmin(exact)
    axis.set_ylim(np.nanmin(exact) - 0.5 * spread - 0.5, np.nanmax(exact) + 0.5 * spread + 0.5)
    axis.set_xlabel("x (dotted: radius of convergence)" if np.isfinite(radius) else "x")
    axis.set_ylabel("f(x)")
    axis.set_title(f"{function} and its Taylor series around {center:g}")
    axis.legend()
    axis.grid(alpha=0.3)
    # Fixed margins: tight_layout would draw the figure once more only to measure it.
    figure.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.91)
    figure.savefig(path, dpi=80)
    plt.close(figure)


@functools.lru_cache(maxsize=128)
def series_fit_png(function, order, center=0.0):
    """`series_fit` as PNG bytes, drawn once per process for each (function, order, center)."""
    buffer = io.BytesIO()
    series_fit(function, order, buffer, center)
    return buffer.getvalue()
