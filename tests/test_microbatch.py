"""Micro-batched loss and gradient against closed forms and against the one-pass gradient."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxunlearn as ju
from jaxunlearn import losses, models, training
from jaxunlearn import recipes


def _least_squares(n, d=4, seed=0, with_mask=False):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.normal(size=n).astype(np.float32)
  w = rng.normal(size=d).astype(np.float32)
  batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
  mask = None
  if with_mask:
    mask = (rng.random(n) < 0.6).astype(np.float32)
    mask[0] = 1.0
    batch["mask"] = jnp.asarray(mask)

  def loss(p, b):
    r = (b["x"] @ p["w"] - b["y"]) ** 2
    return losses.masked_mean(r, b) + 0.1 * jnp.sum(p["w"] ** 2)  # a data-free penalty term too

  return loss, {"w": jnp.asarray(w)}, batch, (x, y, w, mask)


def _closed_form(x, y, w, mask):
  """Value and gradient of mean_i m_i (x_i.w - y_i)^2 / sum m + 0.1 |w|^2, in float64."""
  x, y, w = (np.asarray(a, np.float64) for a in (x, y, w))
  m = np.ones(len(y)) if mask is None else np.asarray(mask, np.float64)
  r = x @ w - y
  denom = max(m.sum(), 1.0)
  value = np.sum(m * r**2) / denom + 0.1 * np.sum(w**2)
  grad = 2 * (x.T @ (m * r)) / denom + 0.2 * w
  return value, grad


@pytest.mark.parametrize("n,micro", [(12, 4), (13, 4), (13, 5), (5, 8), (7, 1)])
@pytest.mark.parametrize("with_mask", [False, True])
def test_matches_closed_form(n, micro, with_mask):
  loss, params, batch, (x, y, w, mask) = _least_squares(n, with_mask=with_mask)
  value, grad = jax.jit(ju.microbatch_value_and_grad(loss, micro))(params, batch)
  ref_value, ref_grad = _closed_form(x, y, w, mask)
  np.testing.assert_allclose(value, ref_value, rtol=2e-5)
  np.testing.assert_allclose(grad["w"], ref_grad, rtol=2e-5, atol=1e-6)


def test_all_masked_batch_gives_zero_data_gradient():
  loss, params, batch, (x, y, w, _) = _least_squares(9, with_mask=True)
  batch["mask"] = jnp.zeros(9)
  value, grad = ju.microbatch_value_and_grad(loss, 2)(params, batch)
  np.testing.assert_allclose(value, 0.1 * np.sum(np.asarray(w, np.float64) ** 2), rtol=1e-6)
  np.testing.assert_allclose(grad["w"], 0.2 * np.asarray(w), rtol=1e-6)


def test_padded_batch_equals_unpadded_on_the_cnn():
  # The padded batch (zero mask on the tail) in micro-batches of 3 gives the gradient of the
  # 10 real examples in one pass.
  apply, params = models.create("cnn", (8, 8, 1), 10, key=jax.random.key(0))
  loss = losses.cross_entropy_loss(apply)
  rng = np.random.default_rng(1)
  x = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, 10, 16).astype(np.int32)
  real = {"x": jnp.asarray(x[:10]), "y": jnp.asarray(y[:10])}
  padded = {"x": jnp.asarray(x), "y": jnp.asarray(y), "mask": jnp.asarray((np.arange(16) < 10).astype(np.float32))}
  ref_value, ref_grad = jax.jit(jax.value_and_grad(loss))(params, real)
  value, grad = jax.jit(ju.microbatch_value_and_grad(loss, 3))(params, padded)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  chex.assert_trees_all_close(grad, ref_grad, rtol=1e-4, atol=1e-6)


def test_keeps_parameter_dtype():
  loss, params, batch, _ = _least_squares(8)
  p16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
  _, grad = ju.microbatch_value_and_grad(loss, 3)(p16, batch)
  assert grad["w"].dtype == jnp.bfloat16


def test_bad_input():
  loss, params, batch, _ = _least_squares(8)
  for bad in (0, -2, 2.5, True, None):
    with pytest.raises(ValueError, match="micro_batch must be a positive integer"):
      ju.microbatch_value_and_grad(loss, bad)
  with pytest.raises(ValueError, match="same leading example axis"):
    ju.microbatch_value_and_grad(loss, 2)(params, {"x": batch["x"], "y": batch["y"][:5]})
  with pytest.raises(ValueError, match="micro_batch applies to per_example=False"):
    ju.fisher_diagonal(loss, params, batch, batch_size=4, micro_batch=2)
  with pytest.raises(ValueError, match="micro_batch must be a positive integer"):
    ju.fisher_diagonal(loss, params, batch, batch_size=4, per_example=False, micro_batch=0)


def test_sharded_batch_equals_single_device():
  from jax.sharding import AxisType, NamedSharding, PartitionSpec

  assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
  loss, params, batch, (x, y, w, mask) = _least_squares(64, with_mask=True)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  sharded = jax.device_put(batch, NamedSharding(mesh, PartitionSpec("data")))
  value, grad = jax.jit(ju.microbatch_value_and_grad(loss, 16))(params, sharded)
  assert len(sharded["x"].sharding.device_set) == 8
  ref_value, ref_grad = _closed_form(x, y, w, mask)
  np.testing.assert_allclose(value, ref_value, rtol=2e-5)
  np.testing.assert_allclose(grad["w"], ref_grad, rtol=2e-5, atol=1e-6)


def _loop_fisher_per_batch(loss, params, batch, batch_size):
  starts = range(0, len(batch["y"]), batch_size)
  acc = jax.tree_util.tree_map(lambda p: np.zeros(p.shape, np.float64), params)
  for s in starts:
    g = jax.grad(loss)(params, {k: v[s:s + batch_size] for k, v in batch.items()})
    acc = jax.tree_util.tree_map(lambda a, gg: a + np.square(np.asarray(gg, np.float64)), acc, g)
  return jax.tree_util.tree_map(lambda a: (a / len(starts)).astype(np.float32), acc)


@pytest.mark.parametrize("batch_size,micro", [(8, 3), (10, 4)])
def test_fisher_per_batch_with_micro_batches_matches_explicit_loop(batch_size, micro):
  loss, params, batch, _ = _least_squares(37)
  got = ju.fisher_diagonal(loss, params, batch, batch_size=batch_size, per_example=False, micro_batch=micro)
  chex.assert_trees_all_close(got, _loop_fisher_per_batch(loss, params, batch, batch_size), rtol=5e-5, atol=1e-7)


def test_fit_and_graddiff_with_micro_batches_follow_the_one_pass_steps(digits):
  train, _ = digits
  apply, params = models.create("cnn", train.input_shape, 10, key=jax.random.key(0))
  loss = losses.cross_entropy_loss(apply)
  part = train.take(train.ids[:100])
  kw = dict(optimizer=optax.sgd(0.05), epochs=1, batch_size=32, seed=0)
  a = training.fit(loss, params, part, **kw)
  b = training.fit(loss, params, part, micro_batch=8, **kw)
  chex.assert_trees_all_close(a, b, rtol=1e-4, atol=1e-5)
  assert not jax.tree_util.tree_all(jax.tree_util.tree_map(jnp.array_equal, a, params))  # it trained
  forget, retain = train.take(train.ids[:10]), train.take(train.ids[10:74])
  c = recipes.gradient_difference(loss, params, forget=forget, retain=retain, **kw)
  d = recipes.gradient_difference(loss, params, forget=forget, retain=retain, micro_batch=8, **kw)
  chex.assert_trees_all_close(c, d, rtol=1e-4, atol=1e-5)
