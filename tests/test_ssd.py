"""Selective Synaptic Dampening against a NumPy reference, alone and in a chain."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxunlearn as ju


def _numpy_ssd(p, i_f, i_d, alpha, lam):
  p, i_f, i_d = (np.asarray(a, np.float64) for a in (p, i_f, i_d))
  out = p.copy()
  for idx in np.ndindex(p.shape):
    if i_f[idx] > alpha * i_d[idx]:
      out[idx] = p[idx] * min(lam * i_d[idx] / i_f[idx], 1.0)
  return out


@pytest.mark.parametrize("alpha,lam", [(10.0, 1.0), (2.0, 0.5), (0.5, 3.0)])
def test_ssd_dampen_matches_numpy(alpha, lam):
  rng = np.random.default_rng(1)
  params = {"a": jnp.asarray(rng.normal(size=(6, 7)), jnp.float32), "b": [jnp.asarray(rng.normal(size=9), jnp.float32)]}
  i_f = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.exponential(size=x.shape) ** 3, jnp.float32), params)
  i_d = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.exponential(size=x.shape), jnp.float32), params)
  i_d["a"] = i_d["a"].at[0, 0].set(0.0)  # zero full importance: dampened to zero when selected
  got = ju.ssd_dampen(params, i_f, i_d, alpha=alpha, dampening=lam)
  for g, p, f, d in zip(*(jax.tree_util.tree_leaves(t) for t in (got, params, i_f, i_d))):
    np.testing.assert_allclose(g, _numpy_ssd(p, f, d, alpha, lam), rtol=1e-6, atol=1e-7)
  changed = sum(int(np.sum(np.asarray(g) != np.asarray(p))) for g, p in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(params)))
  assert changed > 0


def test_ssd_transform_applies_dampening():
  rng = np.random.default_rng(2)
  params = {"w": jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)}
  i_f = {"w": jnp.asarray(rng.exponential(size=(4, 4)) * 20, jnp.float32)}
  i_d = {"w": jnp.asarray(rng.exponential(size=(4, 4)), jnp.float32)}
  tx = ju.selective_synaptic_dampening(alpha=3.0, dampening=1.0)
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)
  u, _ = jax.jit(lambda p: tx.update(zero, tx.init(p), p, forget_importance=i_f, full_importance=i_d))(params)
  np.testing.assert_allclose(optax.apply_updates(params, u)["w"], _numpy_ssd(params["w"], i_f["w"], i_d["w"], 3.0, 1.0), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="needs params"):
    tx.update(params, tx.init(params), None, forget_importance=i_f, full_importance=i_d)


def test_ssd_bad_input():
  p = {"w": jnp.ones(3)}
  ok = {"w": jnp.ones(3)}
  with pytest.raises(ValueError, match="alpha must be > 0"):
    ju.ssd_dampen(p, ok, ok, alpha=0.0, dampening=1.0)
  with pytest.raises(ValueError, match="dampening must be > 0"):
    ju.selective_synaptic_dampening(alpha=1.0, dampening=-1.0)
  with pytest.raises(ValueError, match="forget_importance must have the same pytree structure"):
    ju.ssd_dampen(p, {"v": jnp.ones(3)}, ok, alpha=1.0, dampening=1.0)
  with pytest.raises(ValueError, match="full_importance leaf 'w' has shape"):
    ju.ssd_dampen(p, ok, {"w": jnp.ones(4)}, alpha=1.0, dampening=1.0)
  with pytest.raises(ValueError, match="forget_importance has non-finite values.*'w'"):
    ju.ssd_dampen(p, {"w": jnp.array([1.0, jnp.nan, 1.0])}, ok, alpha=1.0, dampening=1.0)
  with pytest.raises(ValueError, match="full_importance has non-finite"):
    ju.ssd_dampen(p, ok, {"w": jnp.array([1.0, jnp.inf, 1.0])}, alpha=1.0, dampening=1.0)
  with pytest.raises(ValueError, match="negative"):
    ju.ssd_dampen(p, ok, {"w": jnp.array([1.0, -1.0, 1.0])}, alpha=1.0, dampening=1.0)




def test_ssd_in_a_chain_dampens_what_the_preceding_transforms_produced():
  rng = np.random.default_rng(3)
  params = {"w": jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)}
  grads = {"w": jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)}
  i_f = {"w": jnp.asarray(rng.exponential(size=(4, 4)) * 20, jnp.float32)}
  i_d = {"w": jnp.asarray(rng.exponential(size=(4, 4)), jnp.float32)}
  tx = optax.chain(optax.sgd(0.1), ju.selective_synaptic_dampening(alpha=3.0, dampening=1.0))
  u, _ = tx.update(grads, tx.init(params), params, forget_importance=i_f, full_importance=i_d)
  stepped = np.asarray(params["w"]) - 0.1 * np.asarray(grads["w"])  # what sgd alone would give
  np.testing.assert_allclose(optax.apply_updates(params, u)["w"], _numpy_ssd(stepped, i_f["w"], i_d["w"], 3.0, 1.0),
                             rtol=1e-5, atol=1e-6)
  # The states are optax's EmptyState, under the public names.
  assert ju.SSDState is optax.EmptyState and ju.GradientAscentState is optax.EmptyState
  assert isinstance(ju.gradient_difference().init(params), optax.EmptyState)


def test_ssd_reports_its_selection_and_warns_when_it_selects_nothing():
  rng = np.random.default_rng(7)
  params = {"a": jnp.asarray(rng.normal(size=(5, 6)), jnp.float32), "b": jnp.asarray(rng.normal(size=4), jnp.float32)}
  i_f = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.exponential(size=x.shape) * 4, jnp.float32), params)
  i_d = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.exponential(size=x.shape), jnp.float32), params)
  f64 = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(i_f)]
  d64 = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(i_d)]
  largest = max(float(np.max(f / d)) for f, d in zip(f64, d64))
  for alpha in (0.5, 3.0, 20.0):
    got = ju.ssd_selection(i_f, i_d, alpha=alpha)
    assert got["selected"] == sum(int(np.sum(f > alpha * d)) for f, d in zip(f64, d64))
    assert got["parameters"] == 34 and got["largest_ratio"] == pytest.approx(largest, rel=1e-6)
  with pytest.warns(ju.SSDWarning, match="selects no parameter"):
    same = ju.ssd_dampen(params, i_f, i_d, alpha=largest * 1.01, dampening=1.0)
  for a, b in zip(jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Forgetting one digit class of ten: I_f / I_D cannot exceed n / n_forget, so the paper's alpha = 10
  # selects (almost) nothing; the recipe reports it.
  train, _ = ju.data.load("digits")
  forget, retain = ju.data.split_forget(train, ju.data.class_ids(train, 3))
  apply, p0 = ju.models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
  loss = ju.losses.cross_entropy_loss(apply)
  stats = {}
  ju.recipes.ssd(loss, p0, forget=forget, retain=retain, stats=stats)
  assert stats["selected"] > 0 and stats["largest_ratio"] <= len(train) / len(forget) * (1 + 1e-5)
  with pytest.warns(ju.SSDWarning):
    ju.recipes.ssd(loss, p0, forget=forget, retain=retain, alpha=len(train) / len(forget) * 1.01)
