"""The core on every Keras backend: FLOPs by one definition, and a search that records what it ran on.

`KERAS_BACKEND=jax pytest -m core` runs these, and the other core tests, under JAX.
"""

import itertools

import keras
import pytest
from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.model import build_model
from harness.training.costs import count_flops
from harness.training.device import description
from tests.test_costs import profiled_flops
from tests.test_search import TINY, search_args, stores, write_space

pytestmark = pytest.mark.core

# Forward FLOPs per sample on 8x8x1 inputs and 10 classes, as TensorFlow's profiler counted them (the scaled basis,
# the default since issue 26, adds one division per value: t = (x - x0) / limit).
PROFILED_FLOPS = [
    ({}, 1_010_492),
    ({"insertion": "dense", "function": "softplus", "order": 3}, 1_014_588),
    ({"insertion": "all", "function": "tanh", "order": 5, "mode": "weighted", "conditioning": "tanh"}, 1_062_532),
    ({"insertion": "input", "mode": "expand", "order": 2}, 1_084_604),
    (
        {"insertion": "conv2", "conditioning": "batchnorm", "order": 4, "per_unit": True, "coefficients": "trainable"},
        1_014_332,
    ),
    ({"insertion": "conv1", "conditioning": "clip", "order": 1, "center": 0.5}, 1_022_780),
]


@pytest.mark.parametrize("params,profiled", PROFILED_FLOPS)
def test_flops_are_the_same_on_every_backend(params, profiled):
    assert count_flops(build_model(params, (8, 8, 1), 10)) == profiled


def test_a_two_trial_search_records_its_backend_and_reports(tmp_path):
    space = write_space(tmp_path, {**TINY, "params": {**TINY["params"], "insertion": ["none", "dense"]}})
    assert (
        main(search_args(tmp_path, space, "--study", "on-backend", "--trials", "2", "--pruner", "none", "--seed", "0"))
        == 0
    )
    storage, tracking = stores(tmp_path)
    client = MlflowClient(tracking)
    runs = client.search_runs(
        [client.get_experiment_by_name("on-backend").experiment_id], "tags.`harness.role` = 'trial'"
    )
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        assert (
            run.data.tags["backend"]
            == run.data.params["backend"]
            == keras.backend.backend()
            == description()["backend"]
        )
        assert run.data.tags["backend_version"] and run.data.tags["device"] and run.data.tags["determinism"]
        assert run.data.metrics["flops"] > 0 and run.data.metrics["latency_ms"] > 0
    assert (
        main(
            [
                "report",
                "--study",
                "on-backend",
                "--storage",
                storage,
                "--tracking-uri",
                tracking,
                "--out",
                str(tmp_path / "report"),
            ]
        )
        == 0
    )


ARCHITECTURES = (
    [{}]
    # The layer's settings crossed at one point (an insertion changes only the shape the layer sees), then each
    # point with each mode.
    + [
        {
            "insertion": "conv2",
            "mode": mode,
            "conditioning": conditioning,
            "order": order,
            "per_unit": per_unit,
            "width": 0.5,
            "expand_outputs": outputs,
        }
        for (mode, outputs), conditioning, order, per_unit in itertools.product(
            [("series", "terms"), ("weighted", "terms"), ("expand", "partial_sums")],
            ["none", "clip", "tanh", "batchnorm"],
            [0, 3],
            [False, True],
        )
        if order == 3 or not per_unit
    ]
    + [
        {"insertion": insertion, "mode": mode, "order": 3, "per_unit": True, "width": 0.5, "conditioning": "clip"}
        for insertion, mode in itertools.product(["input", "dense", "all"], ["series", "weighted", "expand"])
        if not (insertion == "all" and mode == "expand")
    ]
    + [
        {"insertion": "conv2", "mode": mode, "basis": basis, "order": order, "conditioning": "tanh"}
        for mode, basis, order in itertools.product(["series", "weighted", "expand"], ["chebyshev", "legendre"], [0, 4])
    ]
    + [
        {"backbone": backbone, "width": 0.25, **expansion}
        for backbone in ("vgg", "resnet20")
        for expansion in (
            {},
            {"insertion": "all", "mode": "weighted", "conditioning": "tanh"},
            {"insertion": "input", "mode": "expand", "conditioning": "batchnorm"},
        )
    ]
)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's profiler is the reference")
def test_the_count_is_what_tensorflows_profiler_counts():
    for params in ARCHITECTURES:
        model = build_model(params, (8, 8, 1), 10)
        assert count_flops(model) == profiled_flops(model), params
