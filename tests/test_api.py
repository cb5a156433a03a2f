"""The library's front: `dir(harness)` shows it, `harness.expand` puts the expansion into a model a researcher
already has, and `harness.search`/`harness.report` do what their commands do."""

import inspect

import keras
import numpy as np
import pytest

import harness
from harness.expansion.layer import TaylorExpansion


def _expansions(model):
    return [layer for layer in model.layers if isinstance(layer, TaylorExpansion)]


def test_dir_lists_the_public_api():
    public = [name for name in dir(harness) if not name.startswith("_")]
    assert set(harness.__all__) <= set(public)
    assert {"expand", "search", "report", "TaylorExpansion", "build_model", "load_space", "run_trial"} <= set(public)
    for name in harness.__all__:
        assert callable(getattr(harness, name))


def _saved_and_loaded(model, folder):
    path = folder / "expanded.keras"
    model.save(path)
    return keras.saving.load_model(path)


def test_expand_a_sequential_model_saves_and_loads(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(16, name="dense"),
            keras.layers.ReLU(name="dense_relu"),
            keras.layers.Dense(10, activation="softmax", name="classifier"),
        ]
    )
    expanded = harness.expand(model, "all", function="softplus", order=4, coefficients="trainable")
    assert [layer.name for layer in _expansions(expanded)] == ["conv_activation", "dense_relu"]
    assert not _expansions(model)  # the model handed in is left as it was
    # A layer whose input is unchanged keeps its weights: the conv's are the model's own.
    np.testing.assert_array_equal(expanded.get_layer("conv").get_weights()[0], model.get_layer("conv").get_weights()[0])
    images = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    expanded.compile("adam", "sparse_categorical_crossentropy")
    expanded.fit(images, np.arange(4), epochs=1, verbose=0)
    reloaded = _saved_and_loaded(expanded, tmp_path)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expanded.predict(images, verbose=0), atol=1e-6)


def test_expand_after_named_layers_and_by_glob():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, name="conv_a")(inputs)
    h = keras.layers.Conv2D(4, 3, name="conv_b")(h)
    outputs = keras.layers.Dense(10, activation="softmax", name="head")(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    by_name = harness.expand(model, ["conv_b"], function="tanh", order=3, mode="expand")
    assert [layer.name for layer in _expansions(by_name)] == ["conv_b_expansion"]
    assert by_name.get_layer("conv_b_expansion").output.shape[-1] == 4 * 4  # p + 1 terms per channel
    by_glob = harness.expand(model, "after:conv_*", function="gelu", order=2)
    assert [layer.name for layer in _expansions(by_glob)] == ["conv_a_expansion", "conv_b_expansion"]


def test_expand_mobilenet_v3_small_with_its_hard_swish(tmp_path):
    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=10)
    hard_swish = [
        layer.name for layer in model.layers if getattr(layer, "activation", None) is keras.activations.hard_swish
    ]
    assert hard_swish  # the network's own activations, beside its ReLUs
    expanded = harness.expand(model, "all", function="tanh", order=3)
    replaced = {layer.name for layer in _expansions(expanded)}
    assert set(hard_swish) <= replaced
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    reloaded = _saved_and_loaded(expanded, tmp_path)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expanded.predict(images, verbose=0), atol=1e-5)


@pytest.mark.parametrize(
    "insertion, options, message",
    [
        (["conv_bb"], {}, "has no layer 'conv_bb' (did you mean 'conv_b'?)"),
        (
            "alll",
            {},
            "insertion 'alll' is not one of all, first, last, input, 'after:GLOB' or a list of layer names "
            "(did you mean 'all'?)",
        ),
        ("all", {"functon": "tanh"}, "unknown option 'functon' (did you mean 'function'?)"),
        ("all", {"function": "tahn"}, "unknown function 'tahn' (did you mean 'tanh'?)"),
        ("all", {"mode": "expand"}, "insertion 'all' replaces activations, so mode cannot be 'expand'"),
        ("after:pool*", {}, "no layer of"),
    ],
)
def test_expand_says_what_is_wrong_and_what_was_meant(insertion, options, message):
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv_b")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(h)))
    with pytest.raises(ValueError) as raised:
        harness.expand(model, insertion, **options)
    assert message in str(raised.value)


def test_search_and_report_from_python(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "tiny.yaml"
    space.write_text(
        "dataset: {name: digits, train_size: 256, val_size: 64, test_size: 128}\n"
        "training: {epochs: 1, seed: 0}\n"
        "params: {insertion: [dense], function: [softplus], order: [2], width: [0.25]}\n"
    )
    stores = {"storage": f"sqlite:///{tmp_path}/optuna.db", "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    study = harness.search(space, trials=2, confirm=0, **stores)
    assert study.study_name == "tiny" and len(study.trials) == 2
    assert study.trials[0].user_attrs["insertion"] == "none"  # the baseline first
    written = harness.report("tiny", out=tmp_path / "report", **stores)
    assert (written.folder / "index.html").is_file() and written.answer and all(written.answer)


def test_the_public_api_is_typed_and_documented():
    for name in harness.__all__:
        public = getattr(harness, name)
        function = public.__init__ if isinstance(public, type) else public
        signature = inspect.signature(function)
        untyped = [p.name for p in signature.parameters.values() if p.name != "self" and p.annotation is p.empty]
        assert not untyped, f"harness.{name}: {untyped} have no type"
        assert signature.return_annotation is not signature.empty, f"harness.{name} says not what it returns"
        assert "Args:" in public.__doc__, f"harness.{name}'s docstring has no Args"
        if not isinstance(public, type):
            assert "Returns:" in public.__doc__ and "Raises:" in public.__doc__, name
