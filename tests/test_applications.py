"""Any model means any: every keras.applications network that takes 32x32 inputs expands, has its FLOPs counted,
trains, reloads, and trains in a search as a backbone.

One network of each family runs here (the families share their layer types); `HARNESS_ALL_APPLICATIONS=1` runs
all 37 (about 15 minutes on 2 CPU cores). Xception, InceptionV3 and InceptionResNetV2 need 71x71 or 75x75 inputs.
"""

import os

import keras
import numpy as np
import pytest
from PIL import Image

import harness
from harness.expansion.layer import TaylorExpansion
from harness.training import costs
from tests.test_costs import ALSO_COVERED, PROFILED_NETWORKS

FAMILIES = (  # one network of each family
    "ConvNeXtTiny",
    "DenseNet121",
    "EfficientNetB0",
    "EfficientNetV2B0",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Small",
    "NASNetMobile",
    "ResNet50",
    "ResNet50V2",
    "VGG16",
)
TAKE_32X32 = PROFILED_NETWORKS + ALSO_COVERED  # every one, listed where their counts are checked
NETWORKS = TAKE_32X32 if os.environ.get("HARNESS_ALL_APPLICATIONS") else FAMILIES


@pytest.mark.parametrize("name", NETWORKS)
def test_a_keras_application_expands_counts_trains_and_reloads(name, tmp_path):
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)
    # Plain ops (fused=False) and one eager step: a fused kernel compiles once per layer shape, 120 times in a
    # DenseNet, which is a GPU's trade, not this test's point. Bounded inputs (conditioning): an unbounded cubic in
    # each of ResNet101's 100 activations overflows at initialisation.
    expanded = harness.expand(model, "all", function="tanh", order=3, conditioning="tanh", fused=False)
    replaced = sum(isinstance(layer, TaylorExpansion) for layer in expanded.layers)
    assert replaced > 0
    plain, with_series = costs.count_flops(model), costs.count_flops(expanded)
    assert 0 < plain < with_series  # a series costs more than the ReLU it replaces
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    expanded.compile(keras.optimizers.SGD(1e-3), "sparse_categorical_crossentropy", run_eagerly=True)
    loss = expanded.train_on_batch(images, np.array([0, 1]))
    assert np.isfinite(loss)
    path = tmp_path / f"{name}.keras"
    expanded.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded(images), expanded(images), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_rgb_folder(tmp_path_factory):
    """An image folder of 32x32 RGB images, two classes told apart by brightness."""
    root = tmp_path_factory.mktemp("rgb")
    rng = np.random.default_rng(0)
    for part, count in (("train", 40), ("test", 12)):
        for label, level in (("dark", 60), ("light", 190)):
            folder = root / part / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(level, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_a_keras_application_is_a_backbone_a_search_trains(tiny_rgb_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "apps.yaml"
    space.write_text(
        f"dataset: {{name: 'imagefolder:{tiny_rgb_folder}', train_size: 64, val_size: 16, test_size: 24}}\n"
        "training: {epochs: 1, seed: 0}\n"
        "params:\n"
        "  backbone: keras.applications.MobileNet\n"
        "  insertion: [last]\n"
        "  function: [tanh]\n"
        "  order: [3]\n"
    )
    stores = {"storage": f"sqlite:///{tmp_path}/optuna.db", "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    study = harness.search(space, trials=2, confirm=0, **stores)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert [t.user_attrs.get("insertion", t.params.get("insertion")) for t in study.trials] == ["none", "last"]
    assert study.trials[1].user_attrs["flops"] > study.trials[0].user_attrs["flops"] > 0
