"""The adversarial losses of `ganforge.losses` and the WGAN-GP gradient penalty of `ganforge.regularizers`,
in TensorFlow, for `backend: tensorflow` training.

The formulas are torch's, term for term (means over the batch, softplus for the logistic losses, LSGAN's
0-1 coding with the 1/2 factors); tests check each against the torch implementation on the same logits.
The weights of the terms are not decided here: `ganforge.losses.gp_weight(cfg)` and `loss.drift`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

DLoss = Callable[[Any, Any], Any]
GLoss = Callable[[Any], Any]


def _mean(x: Any) -> Any:
    return tf.reduce_mean(x)


def _wgan_g(f: Any) -> Any:
    return -_mean(f)


# name -> (d_loss(d_real, d_fake), g_loss(d_fake)); names as in ganforge.losses.LOSSES
LOSSES: dict[str, tuple[DLoss, GLoss]] = {
    "nsgan": (lambda r, f: _mean(tf.nn.softplus(-r)) + _mean(tf.nn.softplus(f)), lambda f: _mean(tf.nn.softplus(-f))),
    "wgan": (lambda r, f: _mean(f) - _mean(r), _wgan_g),
    "wgan-gp": (lambda r, f: _mean(f) - _mean(r), _wgan_g),
    "hinge": (lambda r, f: _mean(tf.nn.relu(1.0 - r)) + _mean(tf.nn.relu(1.0 + f)), _wgan_g),
    "lsgan": (lambda r, f: 0.5 * _mean(tf.square(r - 1.0)) + 0.5 * _mean(tf.square(f)),
              lambda f: 0.5 * _mean(tf.square(f - 1.0))),
}


def gradient_penalty(D: Callable[..., Any], real: Any, fake: Any, labels: Any, eps: Any, **d_kwargs: Any) -> Any:
    """E[(||grad D(x_hat)||_2 - 1)^2] (unweighted) with x_hat = eps*real + (1-eps)*fake, eps (N, 1, 1, 1) given by
    the caller. Called inside the caller's tape, the inner gradient is recorded, so the penalty backpropagates."""
    real, fake = tf.stop_gradient(real), tf.stop_gradient(fake)
    x_hat = eps * real + (1.0 - eps) * fake
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        out = tf.reduce_sum(D(x_hat, labels, **d_kwargs))
    grad = tape.gradient(out, x_hat)
    sq = tf.reduce_sum(tf.square(tf.reshape(grad, (tf.shape(grad)[0], -1))), axis=1)
    norm = tf.sqrt(tf.maximum(sq, 1e-24))  # a zero gradient has gradient 0 (torch's norm), not NaN
    return tf.reduce_mean(tf.square(norm - 1.0))
