"""Pruning + fine-tune, l1-sparse, noise + fine-tune and Fisher forgetting against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxunlearn as ju
from jaxunlearn import recipes


def test_decaying_l1_adds_the_decaying_subgradient():
  params = {"w": jnp.array([1.5, -2.0, 0.0, 0.3])}
  tx = optax.chain(ju.decaying_l1(0.2, 4), optax.sgd(0.1))
  state, p = tx.init(params), params
  want = np.asarray(params["w"], np.float64)
  for t in range(6):
    g = {"w": jnp.full(4, 0.05)}
    u, state = tx.update(g, state, p)
    p = optax.apply_updates(p, u)
    alpha_t = 0.2 * max(0.0, 1 - t / 4)
    want = want - 0.1 * (0.05 + alpha_t * np.sign(want))
    np.testing.assert_allclose(np.asarray(p["w"]), want, rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match="needs params"):
    ju.decaying_l1(0.1, 3).update(g, ju.decaying_l1(0.1, 3).init(params))


def _linear_problem(n=64, d=6, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32)

  def apply(p, x):
    return jnp.reshape(x, (x.shape[0], -1)) @ p["w"] + p["b"][None]

  params = {"w": jnp.asarray(rng.normal(size=(d, 2)), jnp.float32), "b": jnp.zeros(2, jnp.float32)}
  return apply, params, {"x": x, "y": y}


def test_prune_finetune_holds_the_pruned_weights_at_zero():
  apply, params, data = _linear_problem()
  loss = ju.losses.cross_entropy_loss(apply)
  out = recipes.prune_finetune(loss, params, retain=data, seed=0, sparsity=0.5, epochs=3, batch_size=16)
  w0, w = np.asarray(params["w"]), np.asarray(out["w"])
  pruned = np.argsort(np.abs(w0).ravel(), kind="stable")[:6]  # floor(0.5 * 12) smallest magnitudes
  assert np.all(w.ravel()[pruned] == 0.0)
  keep = np.setdiff1d(np.arange(12), pruned)
  assert np.all(w.ravel()[keep] != w0.ravel()[keep])  # the others trained
  assert np.all(np.asarray(out["b"]) != 0.0)  # biases are not pruned


def test_fisher_forgetting_noise_has_the_inverse_fisher_variance():
  # loss = mean_i <w, x_i> with x_i = c for every example: per-example gradient c, Fisher c^2.
  n_entries = 20000
  c = np.where(np.arange(n_entries) < n_entries // 2, 0.01, 3.0).astype(np.float32)

  def loss(p, batch):
    return ju.losses.masked_mean(jnp.sum(p["w"][None] * batch["x"], axis=1), batch)

  data = {"x": np.tile(c, (8, 1)), "y": np.zeros(8, np.int32)}
  params = {"w": jnp.zeros(n_entries, jnp.float32)}
  alpha, vmax = 1e-3, 0.5
  out = np.asarray(recipes.fisher_forgetting(loss, params, retain=data, seed=0, alpha=alpha, max_variance=vmax,
                                             batch_size=4)["w"])
  for half, ci in ((out[:n_entries // 2], 0.01), (out[n_entries // 2:], 3.0)):
    std = np.sqrt(min(alpha / (ci ** 2 + 1e-8), vmax))
    assert abs(half.std() / std - 1) < 0.05 and abs(half.mean()) < 4 * std / np.sqrt(len(half))


def test_noise_finetune_draws_the_calibrated_sigma():
  params = {"w": jnp.zeros(40000, jnp.float32)}
  stats = {}

  def loss(p, batch):
    return jnp.sum(p["w"]) * 0.0 + ju.losses.masked_mean(batch["x"][:, 0], batch)

  out = recipes.noise_finetune(loss, params, retain={"x": np.ones((4, 1), np.float32), "y": np.zeros(4, np.int32)},
                               seed=0, epsilon=0.5, delta=1e-5, sensitivity=0.1, epochs=0, stats=stats)
  assert stats["sigma"] == ju.gaussian_sigma(0.5, 1e-5, 0.1)
  assert abs(float(np.std(np.asarray(out["w"]))) / stats["sigma"] - 1) < 0.02


def test_l1_sparse_runs_of_other_lengths_share_one_compiled_step():
  apply, params, data = _linear_problem(n=96)
  traces = []

  def loss(p, batch):
    traces.append(1)
    return ju.losses.cross_entropy_loss(apply)(p, batch)

  recipes.l1_sparse(loss, params, retain=data, seed=0, epochs=2, batch_size=16)
  first = len(traces)
  short = {k: v[:64] for k, v in data.items()}  # another retain size: another run length T
  out = recipes.l1_sparse(loss, params, retain=short, seed=0, epochs=2, batch_size=16)
  assert len(traces) == first
  # The same steps written out: SGD with momentum on g + alpha (1 - t/T) sign(w), T = 2 * 4.
  p, opt = params, optax.sgd(1e-2, momentum=0.9)
  s = opt.init(p)
  batches = [b for e in range(2) for b in ju.data.batches(recipes.as_dataset(short, name="r"), 16, seed=0, epoch=e)]
  for t, b in enumerate(batches):
    g = jax.grad(ju.losses.cross_entropy_loss(apply))(p, b)
    g = jax.tree.map(lambda gi, wi: gi + 2e-2 * max(0.0, 1 - t / 8) * jnp.sign(wi), g, p)
    u, s = opt.update(g, s, p)
    p = optax.apply_updates(p, u)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(p)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
