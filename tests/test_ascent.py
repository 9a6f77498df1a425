"""gradient_ascent and gradient_difference: chains with optax, closed forms, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxunlearn as ju


def _params(dtype=jnp.float32):
  return {
      "body": {"kernel": jnp.arange(12, dtype=jnp.float32).reshape(3, 4).astype(dtype) / 7, "bias": jnp.ones(4, dtype)},
      "head": [jnp.linspace(-1, 1, 5).astype(dtype)],
  }


def test_gradient_ascent_chains_with_adam():
  params = _params()
  grads = jax.tree_util.tree_map(lambda x: jnp.sin(x) + 0.1, params)
  tx = optax.chain(ju.gradient_ascent(), optax.adam(1e-2))
  ref = optax.adam(1e-2)
  u, _ = tx.update(grads, tx.init(params), params)
  u_ref, _ = ref.update(jax.tree_util.tree_map(lambda g: -g, grads), ref.init(params), params)
  chex.assert_trees_all_close(u, u_ref)
  # A step of ascent raises the loss it was given the gradient of.
  loss = lambda p: jnp.sum(jnp.square(p["head"][0] - 2.0))  # noqa: E731
  p = {"head": [jnp.zeros(3)]}
  sgd = optax.chain(ju.gradient_ascent(), optax.sgd(0.1))
  u, _ = sgd.update(jax.grad(loss)(p), sgd.init(p), p)
  assert loss(optax.apply_updates(p, u)) > loss(p)


def test_gradient_difference_closed_form_and_errors():
  params = _params()
  f = jax.tree_util.tree_map(lambda x: x * 3.0, params)
  r = jax.tree_util.tree_map(lambda x: x - 1.0, params)
  tx = ju.gradient_difference(forget_weight=0.5, retain_weight=2.0)
  u, _ = tx.update(f, tx.init(params), params, retain_grads=r)
  for uu, ff, rr in zip(*(jax.tree_util.tree_leaves(t) for t in (u, f, r))):
    np.testing.assert_allclose(uu, 2.0 * np.asarray(rr) - 0.5 * np.asarray(ff), rtol=1e-6)
  with pytest.raises(ValueError, match="retain_grads must have the same pytree structure"):
    tx.update(f, tx.init(params), params, retain_grads={"body": r["body"]})
  with pytest.raises(ValueError, match=r"retain_grads leaf 'head/0' has shape \(4,\)"):
    tx.update(f, tx.init(params), params, retain_grads={**r, "head": [jnp.zeros(4)]})
  with pytest.raises(TypeError, match="retain_grads"):
    tx.update(f, tx.init(params), params)
