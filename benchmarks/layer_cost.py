"""Forward+backward cost of TaylorExpansion against ReLU and the original answer.

Every variant is timed in the same run, interleaved, and reported as a ratio,
so machine noise cancels out. The original computation is the first answer's
tile -> pow -> per-unit alpha -> cumsum -> per-unit w -> sum, rewritten in
plain TensorFlow (LocallyConnected2D 1x1 is an elementwise product per unit).

Targets (order 4): per-unit trainable `weighted` <= 2x ReLU; fixed `series`
<= 1x ReLU; both >= 10x faster than the original.

    python benchmarks/layer_cost.py [--order 4] [--repeats 7]
"""

import argparse
import time

import numpy as np
import tensorflow as tf

from harness.expansion.layer import TaylorExpansion

SHAPES = [(256, 512), (64, 30, 30, 32)]


def original_answer(x, alpha, w, order):
    x_p = tf.pow(tf.tile(x[..., None], [1] * len(x.shape) + [order + 1]), tf.range(order + 1, dtype=x.dtype))
    s = tf.cumsum(x_p * alpha, axis=-1)
    return tf.reduce_sum(s * w, axis=-1)


def forward_backward_step(forward, x, variables):
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(forward(x))
        return tape.gradient(loss, [x, *variables])

    return step


def time_steps(steps, repeats, calls):
    """Best-of-`repeats` seconds per call for each step, timed round-robin."""
    for step in steps.values():
        for _ in range(3):
            step()
    best = {name: np.inf for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(calls):
                step()
            best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return best


def variants(shape, order):
    x = tf.Variable(tf.random.uniform(shape, -1.5, 1.5, seed=0))
    units = shape[-1]
    series_fixed = TaylorExpansion("softplus", order, mode="series")
    weighted = TaylorExpansion("softplus", order, mode="weighted", coefficients="trainable", per_unit=True)
    series_fixed.build(shape)
    weighted.build(shape)
    alpha = tf.Variable(tf.random.normal((units, order + 1)))
    w = tf.Variable(tf.random.normal((units, order + 1)))
    return {
        "relu": forward_backward_step(tf.nn.relu, x, []),
        "series fixed": forward_backward_step(series_fixed, x, []),
        "weighted per-unit trainable": forward_backward_step(weighted, x, weighted.trainable_weights),
        "original answer": forward_backward_step(lambda v: original_answer(v, alpha, w, order), x, [alpha, w]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, devices: {[d.device_type for d in tf.config.list_physical_devices()]}")
    print(f"order {args.order}; forward+backward; best of {args.repeats} x {args.calls} calls\n")
    header = f"{'shape':<18}{'variant':<30}{'time':>10}{'vs ReLU':>10}{'original / this':>17}"
    print(header)
    print("-" * len(header))
    for shape in SHAPES:
        seconds = time_steps(variants(shape, args.order), args.repeats, args.calls)
        for name, value in seconds.items():
            print(
                f"{str(shape):<18}{name:<30}{value * 1e6:>8.0f}us"
                f"{value / seconds['relu']:>9.2f}x{seconds['original answer'] / value:>16.1f}x"
            )
        print()


if __name__ == "__main__":
    main()
