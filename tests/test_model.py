import pytest

from harness.expansion.layer import TaylorExpansion
from harness.model import build_model

pytestmark = pytest.mark.core

EXPANSION = {"function": "softplus", "order": 3, "conditioning": "tanh"}


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
        ({"insertion": "stage2"}, "insertion must be one of .* on seed_cnn"),
        ({"backbone": "resnet20", "insertion": "dense"}, "on resnet20"),
        ({"backbone": "resnet20", "insertion": "stage1", "mode": "expand"}, "replaces activations elementwise"),
        ({"backbone": "vgg", "insertion": "after:no_such_layer*"}, "no layer of vgg matches"),
        (
            {"backbone": "resnet20", "insertion": "after:stage2_*_add", "mode": "expand"},
            "Inputs have incompatible shapes",
        ),
        ({"backbone": "alexnet"}, "backbone: 'alexnet' is not one of"),
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
