"""Model surgery: a functional model with a Taylor expansion put in, by replacing activations or inserting layers.

One pass of `keras.models.clone_model`, whose `call_function` lets a layer be
swapped or followed by another. Each layer is rebuilt from its config and,
where its input shape is unchanged, given the weights it was built with, so an
expanded network starts from the same initialisation as its baseline; a layer
whose input shape the expansion changed (after an "expand" insertion) keeps
its fresh weights.

An activation is a `ReLU`, `LeakyReLU`, `ELU`, `PReLU` or `Activation` layer,
or the `activation=` of a Conv or Dense layer, unless it is linear, a softmax,
or the model's output.
"""

import fnmatch

import keras

ACTIVATION_LAYERS = (
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
    keras.layers.Activation,
)
NOT_ACTIVATIONS = (keras.activations.linear, keras.activations.softmax)


def _fused_activation(layer):
    """Whether `layer` applies an activation of its own (Conv2D(..., activation="relu"), say)."""
    activation = getattr(layer, "activation", None)
    return (
        not isinstance(layer, ACTIVATION_LAYERS)
        and callable(activation)
        and activation not in NOT_ACTIVATIONS
        and not isinstance(activation, keras.layers.Layer)
    )


def activations(model):
    """The names of `model`'s activations, in the order the model computes them (its outputs' own left out)."""
    outputs = {id(t) for t in model.outputs}
    found = []
    for layer in model.layers:
        is_layer = isinstance(layer, ACTIVATION_LAYERS) and getattr(layer, "activation", None) not in NOT_ACTIVATIONS
        if (is_layer or _fused_activation(layer)) and not any(
            id(t) in outputs for t in keras.tree.flatten(layer.output)
        ):
            found.append(layer.name)
    return found


def matching_layers(model, pattern):
    """The names of `model`'s layers (inputs left out) that match the glob `pattern`."""
    return [
        layer.name
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer) and fnmatch.fnmatchcase(layer.name, pattern)
    ]


def functional(model):
    """`model` as a functional graph, which surgery needs: a Sequential model's layers called on an Input."""
    if not isinstance(model, keras.Sequential):
        return model
    inputs = keras.Input(batch_shape=model.inputs[0].shape, name="image")
    h = inputs
    for layer in model.layers:
        h = layer(h)
    return keras.Model(inputs, h, name=model.name)


def _shapes(tensors):
    return [tuple(t.shape) for t in keras.tree.flatten(tensors) if hasattr(t, "shape")]


def rebuild(model, make_expansion, *, replace=(), insert_after=None, input_stage=()):
    """`model` with its activations named in `replace` replaced by `make_expansion(name)`, an expansion inserted
    after each layer named in `insert_after` ({layer name: expansion name}), and the layers `input_stage` (say an
    augmentation, then an input expansion) applied to its inputs first."""
    model = functional(model)
    insert_after = insert_after or {}
    input_tensors = keras.tree.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name), model.input
    )
    inputs = keras.tree.flatten(input_tensors)
    staged = {}

    def stage(x):
        if not any(x is i for i in inputs):
            return x
        if id(x) not in staged:
            h = x
            for layer in input_stage:
                h = layer(h)
            staged[id(x)] = h
        return staged[id(x)]

    def call(layer, *args, **kwargs):
        args, kwargs = keras.tree.map_structure(stage, (args, kwargs))
        if not isinstance(layer, keras.layers.Layer):  # an op written as code (x + 3.0, say): stateless, as it is
            return layer(*args, **kwargs)
        unchanged = _shapes(args) == _shapes(layer.input)
        if layer.name in replace and not _fused_activation(layer):
            outputs = make_expansion(layer.name)(*args, **kwargs)
        else:
            config = layer.get_config()
            if layer.name in replace:
                config["activation"] = "linear"
            twin = layer.__class__.from_config(config)
            outputs = twin(*args, **kwargs)
            if unchanged:
                twin.set_weights(layer.get_weights())
            if layer.name in replace:
                outputs = make_expansion(f"{layer.name}_activation")(outputs)
        if layer.name in insert_after:
            outputs = make_expansion(insert_after[layer.name])(outputs)
        return outputs

    return keras.models.clone_model(
        model, input_tensors=input_tensors, clone_function=lambda layer: layer, call_function=call
    )
