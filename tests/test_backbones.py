"""Backbones, insertion points, a researcher's own model, and training recipes, on every Keras backend."""

import keras
import numpy as np
import pytest

from harness.cli import main
from harness.expansion.layer import TaylorExpansion
from harness.model import REPLACING, build_model, insertion_points
from harness.params import BACKBONES
from harness.training import recipe
from harness.training.trial import run_trial, split_params
from tests.test_search import TINY, search_args, write_space

pytestmark = pytest.mark.core

EXPANSION = {"function": "softplus", "order": 3, "conditioning": "tanh"}
MIXED = "tests.user_models:mixed_relus"


@pytest.mark.parametrize("backbone,paper", [("resnet20", 0.27e6), ("resnet56", 0.85e6)])
def test_the_cifar_resnets_have_the_papers_parameter_counts(backbone, paper):
    count = build_model({"backbone": backbone}, (32, 32, 3), 10).count_params()
    assert abs(count / paper - 1) < 0.02, count


# One mode per point: "expand" where the expansion is inserted (it changes the next layer's input), "weighted" (trainable
# term weights) where it replaces every activation, the plain series elsewhere.
# On the other backends (CI's core run under JAX), the seed CNN carries every insertion point and ResNet-20 its
# plain and everywhere-replaced forms: the other points and networks are built of the same layers, surgery is
# backend-neutral, and each first eager step costs CI several seconds.
OTHER_BACKENDS_SKIP = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the same layers as seed_cnn and resnet20: TensorFlow covers it"
)
CASES = [
    pytest.param(
        backbone,
        point,
        "expand" if point not in REPLACING else "weighted" if point == "all" else "series",
        marks=[] if backbone == "seed_cnn" or (backbone == "resnet20" and point == "all") else [OTHER_BACKENDS_SKIP],
    )
    for backbone in BACKBONES
    for point in insertion_points(backbone)
]


@pytest.mark.parametrize("backbone,insertion,mode", CASES, ids=lambda v: str(v))
def test_each_backbone_and_insertion_point_trains_saves_and_reloads(backbone, insertion, mode, digits, tmp_path):
    params = {
        "backbone": backbone,
        "insertion": insertion,
        "width": 0.25,
        **({} if insertion == "none" else {**EXPANSION, "mode": mode}),
    }
    model = build_model(params, digits.input_shape, digits.num_classes)
    assert (insertion == "none") == (not any(isinstance(layer, TaylorExpansion) for layer in model.layers))
    # Eager: tracing a ResNet-56 training step takes TensorFlow 20 s on 2 cores, one eager step 2 s.
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    loss = model.train_on_batch(digits.x_train[:16], digits.y_train[:16])
    assert np.isfinite(loss)
    path = tmp_path / "model.keras"
    model.save(path)
    x = digits.x_test[:8]
    np.testing.assert_array_equal(keras.saving.load_model(path)(x, training=False), model(x, training=False))


def layer_kinds(model):
    return [
        (type(layer).__name__, getattr(getattr(layer, "activation", None), "__name__", None)) for layer in model.layers
    ]


def test_a_builders_every_activation_is_replaced_and_its_baseline_is_unchanged(digits, tmp_path):
    from tests.user_models import mixed_relus

    keras.utils.set_random_seed(0)
    theirs = mixed_relus(digits.input_shape, digits.num_classes, width=1.0)
    keras.utils.set_random_seed(0)
    baseline = build_model({"backbone": MIXED}, digits.input_shape, digits.num_classes)
    assert layer_kinds(baseline) == layer_kinds(theirs)
    for mine, original in zip(baseline.weights, theirs.weights):
        np.testing.assert_array_equal(mine.numpy() if hasattr(mine, "numpy") else mine, original)

    expanded = build_model({"backbone": MIXED, "insertion": "all", **EXPANSION}, digits.input_shape, digits.num_classes)
    series = {layer.name for layer in expanded.layers if isinstance(layer, TaylorExpansion)}
    assert series == {"block1_conv_activation", "block2_relu", "head_activation"}  # the softmax output stays
    assert all(
        getattr(layer, "activation", None) in (None, keras.activations.linear, keras.activations.softmax)
        for layer in expanded.layers
        if not isinstance(layer, TaylorExpansion)
    )
    assert not any(isinstance(layer, keras.layers.ReLU) for layer in expanded.layers)
    path = tmp_path / "expanded.keras"
    expanded.save(path)
    x = digits.x_test[:8]
    np.testing.assert_array_equal(keras.saving.load_model(path).predict(x, verbose=0), expanded.predict(x, verbose=0))

    first, last = (
        build_model({"backbone": MIXED, "insertion": point, **EXPANSION}, digits.input_shape, 10)
        for point in ("first", "last")
    )
    assert [layer.name for layer in first.layers if isinstance(layer, TaylorExpansion)] == ["block1_conv_activation"]
    assert [layer.name for layer in last.layers if isinstance(layer, TaylorExpansion)] == ["head_activation"]
    after = build_model(
        {"backbone": MIXED, "insertion": "after:block*_conv", **EXPANSION, "mode": "expand"}, digits.input_shape, 10
    )
    assert after.get_layer("block2_conv_expansion").output.shape[-1] == 8 * 4  # order 3: four terms per value
    sequential = build_model(
        {"backbone": "tests.user_models:small_sequential", "insertion": "all", **EXPANSION}, digits.input_shape, 10
    )
    assert [layer.name for layer in sequential.layers if isinstance(layer, TaylorExpansion)] == ["conv_activation"]


def test_a_saved_model_file_is_a_backbone(digits, tmp_path):
    from tests.user_models import mixed_relus

    path = tmp_path / "net.keras"
    mixed_relus(digits.input_shape, digits.num_classes).save(path)
    model = build_model({"backbone": str(path), "insertion": "last", **EXPANSION}, digits.input_shape, 10)
    assert [layer.name for layer in model.layers if isinstance(layer, TaylorExpansion)] == ["head_activation"]


@pytest.mark.parametrize(
    "space,message",
    [
        (
            {"model": {"builder": "no_such_package.nets:net"}},
            "backbone no_such_package.nets:net: no module named 'no_such_package'",
        ),
        ({"model": {"builder": "tests.user_models:missing"}}, "tests/user_models.py has no function 'missing'"),
        ({"params": {"backbone": MIXED, "insertion": ["none", "after:block9_*"]}}, "'after:block9_*' matches no layer"),
        ({"model": {"file": "absent.keras"}}, "no such model file"),
    ],
)
def test_a_network_that_cannot_be_had_is_one_line_and_exit_2_before_training(space, message, tmp_path, capsys):
    params = {**TINY["params"], "insertion": ["none", "all"], **space.get("params", {})}
    raw = {**TINY, **{k: v for k, v in space.items() if k != "params"}, "params": params}
    path = write_space(tmp_path, raw)
    assert main(search_args(tmp_path, path, "--study", "bad-net", "--trials", "1", "--confirm", "0")) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("harness: error: ") and message in errors[0], errors
    assert not (tmp_path / "home" / "mlflow.db").exists() or "bad-net" not in (
        tmp_path / "home" / "mlflow.db"
    ).read_bytes().decode("latin-1")


def test_recipes_use_kerass_optimizers_schedules_and_losses():
    training = {
        **split_params({})[1],
        "optimizer": "sgd",
        "learning_rate": 0.1,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "warmup_epochs": 1,
        "batch_size": 10,
    }
    sgd = recipe.optimizer(training, train_size=100, epochs=3)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.nesterov and sgd.momentum == 0.9 and sgd.weight_decay == 5e-4
    cosine = recipe.learning_rate(training, steps_per_epoch=10, epochs=3)
    rate = [float(cosine(step)) for step in (0, 5, 10, 20, 30)]
    np.testing.assert_allclose(rate, [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-6)  # linear warm-up, then cosine to 0
    constant = recipe.learning_rate({**training, "schedule": "constant"}, steps_per_epoch=10, epochs=3)
    np.testing.assert_allclose([float(constant(s)) for s in (5, 10, 29)], [0.05, 0.1, 0.1], atol=1e-6)
    assert isinstance(recipe.optimizer({**training, "optimizer": "adamw"}, 100, 3), keras.optimizers.AdamW)
    assert float(recipe.optimizer(split_params({})[1], 100, 3).learning_rate) == pytest.approx(1e-3)  # the default
    smoothed = recipe.loss({**training, "label_smoothing": 0.1})
    y = recipe.targets(np.array([0, 2]), {**training, "label_smoothing": 0.1}, 3)
    expected = keras.losses.categorical_crossentropy(
        y, np.array([[0.8, 0.1, 0.1], [0.2, 0.2, 0.6]]), label_smoothing=0.1
    )
    assert float(smoothed(y, np.array([[0.8, 0.1, 0.1], [0.2, 0.2, 0.6]]))) == pytest.approx(float(np.mean(expected)))


def test_crop_flip_acts_in_training_only_and_a_seed_repeats_it(digits):
    params = {"augment": "crop_flip", "seed": 3}
    augmented = build_model(
        {}, digits.input_shape, 10, augmentation=recipe.augmentation(split_params(params)[1], (8, 8, 1))
    )
    assert [layer.name for layer in augmented.layers[1:3]] == ["augment_flip", "augment_crop"]
    x = digits.x_train[:32]
    stage = keras.Model(augmented.input, augmented.get_layer("augment_crop").output)
    np.testing.assert_array_equal(stage(x, training=False), x)  # identity at inference
    drawn = [np.asarray(stage(x, training=True)) for _ in range(2)]
    assert not np.array_equal(drawn[0], x) and not np.array_equal(drawn[0], drawn[1])  # new draws each step
    runs = [run_trial({**params, "width": 0.25}, digits, epochs=1) for _ in range(2)]
    assert runs[0].history == runs[1].history  # the seed repeats the draws


def test_a_spaces_model_section_is_its_backbone(tmp_path):
    from harness.study.space import SpaceError, load_space, parse_space

    assert (
        parse_space({"model": {"builder": MIXED}, "params": {"insertion": ["none", "all"]}}).fixed_params["backbone"]
        == MIXED
    )
    (tmp_path / "nets").mkdir()
    path = tmp_path / "nets" / "space.yaml"
    path.write_text("model: {file: net.keras}\nparams: {insertion: [none, last]}\n")
    assert load_space(path).fixed_params["backbone"] == str(tmp_path / "nets" / "net.keras")  # beside the space file
    for raw, message in [
        ({"model": {"builder": MIXED}, "params": {"backbone": "vgg"}}, "name the network once"),
        ({"model": {"builder": MIXED, "file": "net.keras"}, "params": {"width": 1.0}}, "give either builder"),
        ({"model": {"builder": "not a path"}, "params": {"width": 1.0}}, "is not one of seed_cnn"),
        ({"params": {"optimizer": "rmsprop"}}, "optimizer: 'rmsprop' is not one of adam, adamw, sgd"),
        ({"params": {"label_smoothing": 1.0}}, "label_smoothing: 1.0 must be at least 0 and below 1"),
        ({"params": {"warmup_epochs": 0.5}}, "whole number"),
        ({"params": {"insertion": ["none", "after:"]}}, "'after:PATTERN'"),
    ]:
        with pytest.raises(SpaceError, match=message):
            parse_space(raw)
