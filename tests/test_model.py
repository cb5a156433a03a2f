import keras
import numpy as np
import pytest

from harness.expansion.layer import TaylorExpansion
from harness.model import INSERTION_POINTS, build_model

pytestmark = pytest.mark.core

EXPANSION = {"function": "softplus", "order": 3, "conditioning": "tanh"}
CASES = [({"insertion": "none"})] + [
    {"insertion": point, **EXPANSION, "mode": mode}
    for point in INSERTION_POINTS[1:]
    for mode in (["series", "weighted"] if point == "all" else ["series", "weighted", "expand"])
]


@pytest.mark.parametrize("params", CASES, ids=lambda p: "-".join(str(v) for v in (p["insertion"], p.get("mode", ""))))
def test_each_insertion_point_trains_saves_and_loads(params, digits, tmp_path):
    model = build_model({**params, "width": 0.5}, digits.input_shape, digits.num_classes)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(digits.x_train[:64], digits.y_train[:64], batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    x = digits.x_test[:16]
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))


def test_expansion_sits_where_asked():
    def expansion_layers(insertion, mode="series"):
        model = build_model({"insertion": insertion, **EXPANSION, "mode": mode}, (8, 8, 1), 10)
        return [layer.name for layer in model.layers if isinstance(layer, TaylorExpansion)]

    assert expansion_layers("input") == ["input_expansion"]
    assert expansion_layers("dense") == ["dense_expansion"]
    assert expansion_layers("all") == ["conv1_activation", "conv2_activation", "dense_activation"]
    pixels = build_model({"insertion": "input", **EXPANSION, "mode": "expand"}, (32, 32, 3), 10)
    assert pixels.get_layer("input_expansion").output.shape == (None, 32, 32, 12)


def test_width_scales_the_backbone():
    narrow = build_model({"width": 0.5}, (8, 8, 1), 10)
    assert narrow.get_layer("conv1").filters == 16
    assert narrow.get_layer("dense").units == 256


@pytest.mark.parametrize(
    "params,message",
    [
        ({"insertion": "middle"}, "insertion must be one of"),
        ({"insertion": "none", "function": "exp"}, "takes no expansion parameters"),
        ({"insertion": "all", "function": "exp", "mode": "expand"}, "mode must be 'series' or 'weighted'"),
        ({"width": 0}, "width must be a positive number"),
        ({"dropout": 0.3}, "unknown model parameter"),
        ({"insertion": "dense", "function": "log"}, "log1p"),
    ],
)
def test_nonsense_combinations_raise(params, message):
    with pytest.raises(ValueError, match=message):
        build_model(params, (8, 8, 1), 10)
