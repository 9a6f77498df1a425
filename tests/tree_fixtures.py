"""Small parameter trees shared by the transform tests."""

import jax
import jax.numpy as jnp


def params(dtype=jnp.float32):
  return {
      "body": {"kernel": jnp.arange(12, dtype=jnp.float32).reshape(3, 4).astype(dtype) / 7, "bias": jnp.ones(4, dtype)},
      "head": [jnp.linspace(-1, 1, 5).astype(dtype)],
  }


def like(tree, scale):
  return jax.tree_util.tree_map(lambda x: (jnp.ones_like(x, dtype=jnp.float32) * scale).astype(x.dtype), tree)


def fresh_init(key):
  # Fresh parameters shaped like params (used by layer_reset); dtype fixed up by the transform.
  return jax.tree_util.tree_map(lambda x: jax.random.normal(key, x.shape, jnp.float32), params())
