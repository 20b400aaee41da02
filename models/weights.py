"""A model's weights as a flat ``{path: array}`` dict, the format of the inference export (npz, no pickle).

Paths are the module attribute paths joined with "/", e.g. ``encoder/blocks/0/query/w``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def variables_by_path(module: tf.Module) -> dict:
    return {"/".join(str(p) for p in path): v
            for path, v in module._flatten(with_path=True, predicate=lambda x: isinstance(x, tf.Variable))}


def weights_by_path(module: tf.Module) -> dict:
    return {name: v.numpy() for name, v in variables_by_path(module).items()}


def assign_weights(module: tf.Module, weights: dict, names: list[str] | None = None) -> str | None:
    """Copy ``weights[name]`` into the module's variables (all of them, or ``names``).

    Checks every name and shape first and copies nothing on a mismatch; returns what is wrong, or None.
    """
    variables = variables_by_path(module)
    for name in variables if names is None else names:
        if name not in weights:
            return f"the saved weights have no {name} (another architecture?)"
        if tuple(np.shape(weights[name])) != tuple(variables[name].shape):
            return (f"{name} has shape {tuple(np.shape(weights[name]))} in the saved weights but "
                    f"{tuple(variables[name].shape)} in this model")
    for name in variables if names is None else names:
        variables[name].assign(weights[name])
    return None
