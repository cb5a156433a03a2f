"""Trainable expansions under a standard recipe (issue 26): they train, their optimizer group is what it says, and
a divergence says where it began."""

import math

import keras
import numpy as np
import pytest

from harness.model import expansion_variables
from harness.training import data, optimizers
from harness.training.trial import compiled_model, run_trial

pytestmark = pytest.mark.core

SGD_WITH_DECAY = {"optimizer": "sgd", "learning_rate": 0.1, "weight_decay": 5e-4, "batch_size": 32}
EVERY_ACTIVATION = {
    "backbone": "resnet20",
    "width": 0.5,
    "insertion": "all",
    "function": "softplus",
    "order": 3,
    "coefficients": "trainable",
    "conditioning": "tanh",
}
BEFORE_BASES = {"basis": "monomial", "coefficient_gradient": "sum", "coefficient_decay": True}


@pytest.fixture(scope="module")
def digits_512():
    return data.load("digits", train_size=512, val_size=64, test_size=128)


def test_a_resnet_with_trainable_expansions_everywhere_trains_under_sgd_with_decay(digits_512):
    """SGD at 0.1 with weight decay, no warm-up: the default parameterization trains (its loss falls below
    chance's), the layer as it was before bases does not (on TensorFlow a loss of about 1e31, from logits blown
    up through the last expansion; JAX clips the probabilities, so about 13)."""
    chance = math.log(10)
    after = run_trial({**EVERY_ACTIVATION, **SGD_WITH_DECAY}, digits_512, epochs=1)
    assert not after.diverged and math.isfinite(after.history["loss"][0])
    assert after.history["loss"][0] < chance
    before = run_trial({**EVERY_ACTIVATION, **SGD_WITH_DECAY, **BEFORE_BASES}, digits_512, epochs=1)
    assert before.diverged or before.history["loss"][0] > chance


@pytest.mark.parametrize("name,decay", [("sgd", 5e-4), ("adam", 1e-4), ("adamw", 1e-4)])
def test_the_expansion_group_takes_no_decay_and_its_own_learning_rate(digits, name, decay):
    params = {
        "insertion": "dense",
        "function": "softplus",
        "order": 2,
        "mode": "weighted",
        "coefficients": "trainable",
        "coefficient_lr_scale": 10.0,
        "optimizer": name,
        "weight_decay": decay,
        "clip_norm": 5.0,
    }
    model, _ = compiled_model(params, digits, epochs=1)
    optimizer = model.optimizer
    group = expansion_variables(model)
    assert [v.path for v in group] == ["dense_expansion/coefficients", "dense_expansion/term_weights"]
    assert optimizer.coefficient_lr_scale == 10.0 and optimizer.global_clipnorm == 5.0
    assert not any(optimizer.uses_weight_decay(v) for v in group)
    assert optimizer.uses_weight_decay(model.get_layer("dense").kernel)
    # the multiplier applied: one step of SGD without momentum moves a grouped weight 10x as far as another
    if name == "sgd":
        plain = optimizers.SGD(0.01, coefficient_lr_scale=10.0)
        grouped, other = keras.Variable(np.zeros(3)), keras.Variable(np.zeros(3))
        plain.group([grouped])
        plain.apply([np.ones(3), np.ones(3)], [grouped, other])
        np.testing.assert_allclose(grouped.numpy(), -0.1 * np.ones(3), rtol=1e-6)
        np.testing.assert_allclose(other.numpy(), -0.01 * np.ones(3), rtol=1e-6)


def test_decay_on_the_group_when_asked(digits):
    params = {"insertion": "dense", "function": "exp", "order": 2, "coefficients": "trainable"}
    model, _ = compiled_model({**params, "coefficient_decay": True, "weight_decay": 1e-4}, digits, epochs=1)
    assert all(model.optimizer.uses_weight_decay(v) for v in expansion_variables(model))


def test_a_divergence_names_the_variable_and_the_step(digits):
    result = run_trial(
        {"insertion": "dense", "function": "exp", "order": 12, "coefficients": "trainable", "learning_rate": 50.0},
        digits,
        epochs=2,
    )
    assert result.diverged
    reason = result.failure_reason
    assert reason.startswith("diverged: loss became") and " at epoch " in reason and ", batch " in reason
    # the variable named is one of the network's, with its norms or the step it went non-finite
    names = [v.path for v in result.model.trainable_variables]
    assert any(name in reason for name in names), reason
    assert "value norm" in reason or "first non-finite" in reason


def test_the_norm_log_reports_every_variable_each_epoch(digits):
    logged = []
    params = {"insertion": "dense", "function": "softplus", "order": 3, "coefficients": "trainable"}
    result = run_trial(
        params, digits, epochs=2, callbacks=[optimizers.NormLog(lambda m, step: logged.append((step, m)))]
    )
    assert [step for step, _ in logged] == [0, 1]
    metrics = logged[-1][1]
    for variable in result.model.trainable_variables:
        assert metrics[f"norm/value/{variable.path}"] == pytest.approx(np.linalg.norm(variable.numpy()), rel=1e-5)
        assert math.isfinite(metrics[f"norm/gradient/{variable.path}"])
    assert metrics["norm/gradient/dense_expansion/coefficients"] > 0


def test_log_norms_puts_the_norms_in_each_trials_mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    from harness.cli import main
    from tests.test_search import TINY, search_args, stores, write_space

    space = {**TINY, "params": {**TINY["params"], "insertion": ["dense"], "coefficients": ["trainable"]}}
    path = write_space(tmp_path, space)
    assert main(search_args(tmp_path, path, "--trials", "2", "--log-norms", "--baseline-every", "0")) == 0
    client = MlflowClient(stores(tmp_path)[1])
    experiment = client.get_experiment_by_name("space")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("harness.role") != "search"]
    assert sorted(run.data.params["insertion"] for run in runs) == ["dense", "none"]  # the baseline is queued first
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "norm/gradient/dense/kernel")
        assert [m.step for m in history] == [0, 1] and all(m.value > 0 for m in history)
        expanded = run.data.params["insertion"] == "dense"
        assert ("norm/value/dense_expansion/coefficients" in run.data.metrics) == expanded
