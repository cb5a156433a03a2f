import math

import pytest

from harness.training.trial import run_trial

pytestmark = pytest.mark.core


def test_a_trial_reports_accuracy_and_costs(digits):
    result = run_trial({"insertion": "dense", "function": "softplus", "order": 3, "batch_size": 32}, digits, epochs=2)
    assert not result.diverged and result.failure_reason is None
    assert 0.0 <= result.test_accuracy <= 1.0 and 0.0 <= result.best_val_accuracy <= 1.0
    assert len(result.history["val_accuracy"]) == 2
    assert result.trainable_params < result.total_params  # the fixed coefficients
    assert result.train_seconds > 0 and 0 < result.latency_seconds < 0.1


def test_flops_grow_by_the_series_ops(digits):
    """The series adds x - x0, t = (x - x0) / limit and order multiply-adds per unit after Dense 512: (2 p + 2) * 512
    (the raw monomial basis has no division: (2 p + 1) * 512)."""
    baseline = run_trial({}, digits, epochs=1).flops
    for order in (2, 5):
        expanded = run_trial({"insertion": "dense", "function": "exp", "order": order}, digits, epochs=1).flops
        assert expanded - baseline == (2 * order + 2) * 512
    monomial = {"insertion": "dense", "function": "exp", "order": 2, "basis": "monomial"}
    assert run_trial(monomial, digits, epochs=1).flops - baseline == 5 * 512


def test_divergence_is_caught_and_explained(digits):
    result = run_trial({"insertion": "dense", "function": "exp", "order": 12, "learning_rate": 50.0}, digits, epochs=2)
    assert result.diverged
    assert result.failure_reason.startswith("diverged: ")
    assert result.test_accuracy is None
    assert not math.isfinite(result.history["loss"][-1])


def test_bad_params_raise_before_training(digits):
    with pytest.raises(ValueError, match="insertion must be one of"):
        run_trial({"insertion": "sideways"}, digits)


def test_mixed_precision_trains_without_nan(digits):
    import keras

    from harness.expansion.layer import TaylorExpansion

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        result = run_trial(
            {
                "insertion": "all",
                "function": "exp",
                "order": 8,
                "conditioning": "tanh",
                "width": 0.25,
                "augment": "crop_flip",
            },
            digits,
            epochs=1,
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert not result.diverged and math.isfinite(result.history["loss"][-1])
    expansions = [layer for layer in result.model.layers if isinstance(layer, TaylorExpansion)]
    assert expansions and all(layer.compute_dtype == "float32" for layer in expansions)
    assert result.model.get_layer("conv1").compute_dtype == "float16"
    assert result.model.get_layer("classifier").compute_dtype == "float32"
