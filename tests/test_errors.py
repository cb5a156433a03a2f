"""Errors that help: one line, naming what is wrong and the nearest valid name, with TensorFlow's start-up noise
kept out of it."""

import os
import subprocess
import sys

import pytest

from harness.model import ModelError, load_backbone
from harness.params import check_value

BUILDER = """import keras


def build(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(keras.layers.Flatten()(inputs)))
"""


@pytest.fixture
def researchers_package(tmp_path, monkeypatch):
    (tmp_path / "mynets").mkdir()
    (tmp_path / "mynets" / "__init__.py").write_text("")
    (tmp_path / "mynets" / "small.py").write_text(BUILDER)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_bad_builder_path_is_one_line_naming_the_file_and_the_missing_name(researchers_package):
    (researchers_package / "space.yaml").write_text(
        "dataset: {name: digits, train_size: 64, val_size: 32, test_size: 32}\n"
        "training: {epochs: 1}\n"
        "params: {backbone: 'mynets.small:buld', insertion: [none]}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "search", "--space", "space.yaml", "--trials", "1", "--confirm", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "HARNESS_HOME": str(researchers_package / "home")},
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"harness: error: backbone mynets.small:buld: {researchers_package / 'mynets' / 'small.py'} has no function "
        "'buld' (did you mean 'build'?)"
    ]


@pytest.mark.parametrize(
    "backbone, message",
    [
        ("mynets.smal:build", "no module named 'mynets.smal'"),
        ("keras.applications.MobileNetV4", "keras.applications has no network 'MobileNetV4' (did you mean 'Mobile"),
        ("keras.applications.Xception", "Input size must be at least 71x71"),
    ],
)
def test_a_backbone_that_cannot_be_had_says_why(researchers_package, backbone, message):
    with pytest.raises(ModelError, match="^backbone ") as raised:
        load_backbone(backbone, (32, 32, 3), 10)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("backbone", "resnet2O", "(did you mean 'resnet20'?)"),
        ("insertion", "dens", "(did you mean 'dense'?)"),
        ("optimizer", "adamm", "(did you mean 'adam'?)"),
        ("function", "softpuls", "(did you mean 'softplus'?)"),
    ],
)
def test_a_misspelt_value_gets_the_nearest_valid_one(name, value, message):
    with pytest.raises(ValueError) as raised:
        check_value(name, value)
    assert message in str(raised.value)
