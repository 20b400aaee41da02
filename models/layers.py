"""Building blocks shared by the DAE and the title BERT: a pre-norm Transformer encoder in tf.Module.

Plain tf.Module / tf.Variable code: Horovod's DistributedGradientTape works with it under any Keras
version (it fails on Keras 3 variables), and the checkpoint is a tf.train.Checkpoint of these modules.

Mixed precision: the variables are always float32; the layers compute in the dtype of their input
(float16 when a model runs with ``compute_dtype=tf.float16``), except layer norms and the attention
softmax, which compute in float32 and return the input's dtype.
"""

from __future__ import annotations

import math

import tensorflow as tf

from models.config import ConfigError


def gelu(x):
    return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))


ACTIVATIONS = {"gelu": gelu, "relu": tf.nn.relu}


def check_encoder_config(config) -> None:
    """The checks a Transformer encoder's model section needs (the DAE's and the title BERT's)."""
    for key in ("hidden", "blocks", "heads", "ffn"):
        if getattr(config, key) <= 0:
            raise ConfigError(f"model.{key} must be positive")
    if config.hidden % config.heads:
        raise ConfigError(f"model.hidden ({config.hidden}) must divide by model.heads ({config.heads})")
    if config.activation not in ACTIVATIONS:
        raise ConfigError(f"model.activation must be one of {', '.join(ACTIVATIONS)}")
    if not 0.0 <= config.dropout < 1.0:
        raise ConfigError("model.dropout must be in [0, 1)")


class Dense(tf.Module):
    def __init__(self, n_in: int, n_out: int, name: str):
        super().__init__(name=name)
        limit = math.sqrt(6.0 / (n_in + n_out))  # Glorot uniform
        self.w = tf.Variable(tf.random.uniform([n_in, n_out], -limit, limit), name="w")
        self.b = tf.Variable(tf.zeros([n_out]), name="b")

    def __call__(self, x):
        return tf.tensordot(x, tf.cast(self.w, x.dtype), 1) + tf.cast(self.b, x.dtype)


class LayerNorm(tf.Module):
    def __init__(self, size: int, name: str, epsilon: float = 1e-6):
        super().__init__(name=name)
        self.gamma = tf.Variable(tf.ones([size]), name="gamma")
        self.beta = tf.Variable(tf.zeros([size]), name="beta")
        self.epsilon = epsilon

    def __call__(self, x):
        x32 = tf.cast(x, tf.float32)
        mean, variance = tf.nn.moments(x32, axes=[-1], keepdims=True)
        return tf.cast((x32 - mean) * tf.math.rsqrt(variance + self.epsilon) * self.gamma + self.beta, x.dtype)


class EncoderBlock(tf.Module):
    """x + Attention(LN(x)), then x + FFN(LN(x)); padded keys are masked out of attention."""

    def __init__(self, hidden: int, heads: int, ffn: int, activation: str, dropout: float, name: str):
        super().__init__(name=name)
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.heads, self.head_size, self.dropout = heads, hidden // heads, dropout
        self.norm_attention, self.norm_ffn = LayerNorm(hidden, "norm_attention"), LayerNorm(hidden, "norm_ffn")
        self.query, self.key, self.value = (Dense(hidden, hidden, n) for n in ("query", "key", "value"))
        self.output = Dense(hidden, hidden, "output")
        self.ffn_in, self.ffn_out = Dense(hidden, ffn, "ffn_in"), Dense(ffn, hidden, "ffn_out")
        self.activation = ACTIVATIONS[activation]

    def _split(self, x):
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        return tf.transpose(tf.reshape(x, [batch, length, self.heads, self.head_size]), [0, 2, 1, 3])

    def _drop(self, x, training: bool):
        return tf.nn.dropout(x, self.dropout) if training and self.dropout > 0 else x

    def __call__(self, x, mask, training: bool, queries: int | None = None):
        """x: [batch, length, hidden]; mask: [batch, length], True where a real token is.

        With ``queries`` only the first ``queries`` positions are computed (attending over all of them):
        exact when nothing reads the other positions' outputs, as in the last block of a CLS-only model.
        """
        h = self.norm_attention(x)
        if queries is not None:
            x = x[:, :queries]
        q, k, v = self._split(self.query(h if queries is None else h[:, :queries])), self._split(self.key(h)), self._split(self.value(h))
        scores = tf.cast(tf.matmul(q, k, transpose_b=True), tf.float32) / math.sqrt(self.head_size)
        scores += (1.0 - tf.cast(mask, tf.float32))[:, None, None, :] * -1e9
        weights = self._drop(tf.cast(tf.nn.softmax(scores, axis=-1), v.dtype), training)
        context = tf.transpose(tf.matmul(weights, v), [0, 2, 1, 3])
        context = tf.reshape(context, [tf.shape(x)[0], tf.shape(x)[1], self.heads * self.head_size])
        x = x + self._drop(self.output(context), training)
        h = self.norm_ffn(x)
        return x + self._drop(self.ffn_out(self.activation(self.ffn_in(h))), training)


class Encoder(tf.Module):
    """A stack of pre-norm blocks and a final layer norm."""

    def __init__(self, hidden: int, blocks: int, heads: int, ffn: int, activation: str, dropout: float, name: str = "encoder"):
        super().__init__(name=name)
        self.blocks = [EncoderBlock(hidden, heads, ffn, activation, dropout, f"block_{i}") for i in range(blocks)]
        self.final_norm = LayerNorm(hidden, "final_norm")

    def __call__(self, x, mask, training: bool, outputs: int | None = None):
        """Hidden states of every position, or only of the first ``outputs`` ones (computed exactly, cheaper)."""
        for i, block in enumerate(self.blocks):
            x = block(x, mask, training, queries=outputs if i == len(self.blocks) - 1 else None)
        return self.final_norm(x)


class Adam(tf.Module):
    """Adam with its slots created up front, so model and optimizer state can be broadcast from rank 0
    (and restored from a checkpoint) before the first step."""

    def __init__(self, variables, beta1: float, beta2: float, epsilon: float, name: str = "adam"):
        """``beta1``, ``beta2``, ``epsilon``: a config's ``train`` section holds them (configs/*.yaml)."""
        super().__init__(name=name)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name="m") for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name="v") for v in variables]

    def apply(self, gradients, variables, learning_rate):
        """One Adam step. A dense gradient updates the whole variable with TensorFlow's fused kernel (one pass
        over it and its slots); an ``IndexedSlices`` gradient (an embedding table's rows, e.g. of a sampled
        output) updates only the rows it holds, their slots included ("lazy" Adam: the moments of untouched
        rows are not decayed), so a step's cost follows the rows it touched, not the table's size."""
        self.iterations.assign_add(1)
        t = tf.cast(self.iterations, tf.float32)
        beta1_power, beta2_power = self.beta1 ** t, self.beta2 ** t
        for g, var, m, v in zip(gradients, variables, self.m, self.v):
            if isinstance(g, tf.IndexedSlices):
                self._apply_rows(g, var, m, v, learning_rate * tf.sqrt(1.0 - beta2_power) / (1.0 - beta1_power))
                continue
            tf.raw_ops.ResourceApplyAdam(var=var.handle, m=m.handle, v=v.handle, beta1_power=beta1_power,
                                         beta2_power=beta2_power, lr=learning_rate, beta1=self.beta1,
                                         beta2=self.beta2, epsilon=self.epsilon, grad=tf.convert_to_tensor(g))

    def _apply_rows(self, gradient: tf.IndexedSlices, var, m, v, step_size):
        """Adam on the rows of ``gradient`` (duplicate indices summed first), as ResourceApplyAdam computes it."""
        merged = merge_rows(gradient)
        rows, g = merged.indices, merged.values
        m_rows = self.beta1 * tf.gather(m, rows) + (1.0 - self.beta1) * g
        v_rows = self.beta2 * tf.gather(v, rows) + (1.0 - self.beta2) * tf.square(g)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        var.scatter_sub(tf.IndexedSlices(step_size * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))


def merge_rows(gradient: tf.IndexedSlices) -> tf.IndexedSlices:
    """``gradient`` with each row index once, the values of duplicate indices summed."""
    rows, position = tf.unique(gradient.indices)
    return tf.IndexedSlices(tf.math.unsorted_segment_sum(gradient.values, position, tf.size(rows)), rows,
                            gradient.dense_shape)
