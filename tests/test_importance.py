"""fisher_diagonal against explicit loops, on one device and several."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxunlearn as ju


def _regression_problem(n=23, d=5, k=3, seed=0):
  rng = np.random.default_rng(seed)
  data = {"x": jnp.asarray(rng.normal(size=(n, d)), jnp.float32), "y": jnp.asarray(rng.integers(0, k, n), jnp.int32)}
  params = {"w": jnp.asarray(rng.normal(size=(d, k)), jnp.float32), "b": jnp.asarray(rng.normal(size=k), jnp.float32)}

  def loss(p, batch):
    logits = jnp.tanh(batch["x"] @ p["w"]) * 2.0 + p["b"][None, :]
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, batch["y"][:, None], axis=1))

  return loss, params, data


def _loop_fisher_per_example(loss, params, data):
  n = len(data["y"])
  acc = jax.tree_util.tree_map(lambda p: np.zeros(p.shape, np.float64), params)
  for i in range(n):
    g = jax.grad(loss)(params, {k: v[i:i + 1] for k, v in data.items()})
    acc = jax.tree_util.tree_map(lambda a, gg: a + np.square(np.asarray(gg, np.float64)), acc, g)
  return jax.tree_util.tree_map(lambda a: a / n, acc)


def _loop_fisher_per_batch(loss, params, data, batch_size):
  n = len(data["y"])
  starts = list(range(0, n, batch_size))
  acc = jax.tree_util.tree_map(lambda p: np.zeros(p.shape, np.float64), params)
  for s in starts:
    g = jax.grad(loss)(params, {k: v[s:s + batch_size] for k, v in data.items()})
    acc = jax.tree_util.tree_map(lambda a, gg: a + np.square(np.asarray(gg, np.float64)), acc, g)
  return jax.tree_util.tree_map(lambda a: a / len(starts), acc)


@pytest.mark.parametrize("batch_size", [1, 4, 23, 64])
def test_fisher_per_example_matches_explicit_loop(batch_size):
  loss, params, data = _regression_problem()
  ref = _loop_fisher_per_example(loss, params, data)
  got = ju.fisher_diagonal(loss, params, data, batch_size=batch_size)
  chex.assert_trees_all_close(got, jax.tree_util.tree_map(lambda a: a.astype(np.float32), ref), rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("batch_size", [4, 5, 23])
def test_fisher_per_batch_matches_explicit_loop(batch_size):
  loss, params, data = _regression_problem()
  ref = _loop_fisher_per_batch(loss, params, data, batch_size)
  got = ju.fisher_diagonal(loss, params, data, batch_size=batch_size, per_example=False)
  chex.assert_trees_all_close(got, jax.tree_util.tree_map(lambda a: a.astype(np.float32), ref), rtol=2e-5, atol=1e-7)


def test_fisher_unrolled_equals_rolled_and_keeps_bf16():
  loss, params, data = _regression_problem()
  a = ju.fisher_diagonal(loss, params, data, batch_size=4)
  b = ju.fisher_diagonal(loss, params, data, batch_size=4, unroll=True)
  chex.assert_trees_all_close(a, b, rtol=1e-6)
  p16 = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), params)
  out = ju.fisher_diagonal(loss, p16, data, batch_size=4)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(out))


def test_fisher_bad_input():
  loss, params, data = _regression_problem()
  with pytest.raises(ValueError, match="batch_size must be a positive integer"):
    ju.fisher_diagonal(loss, params, data, batch_size=0)
  with pytest.raises(ValueError, match="same leading example axis"):
    ju.fisher_diagonal(loss, params, {"x": data["x"], "y": data["y"][:5]}, batch_size=4)
  with pytest.raises(ValueError, match="no examples"):
    ju.fisher_diagonal(loss, params, {k: v[:0] for k, v in data.items()}, batch_size=4)


@pytest.mark.parametrize("per_example", [True, False])
def test_fisher_under_pmap_equals_single_device(per_example):
  assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
  loss, params, data = _regression_problem(n=8 * 6)
  # Each device holds 6 examples; with batch_size 3 the minibatches are the same as on one device.
  single = ju.fisher_diagonal(loss, params, data, batch_size=3, per_example=per_example)
  sharded = jax.tree_util.tree_map(lambda x: x.reshape((8, 6) + x.shape[1:]), data)
  fn = jax.pmap(
      lambda p, d: ju.fisher_diagonal(loss, p, d, batch_size=3, per_example=per_example, axis_name="dev"),
      axis_name="dev",
      in_axes=(None, 0),
  )
  out = jax.block_until_ready(fn(params, sharded))
  for dev in range(8):
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[dev], out), single, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
@pytest.mark.parametrize("per_example", [True, False])
@pytest.mark.parametrize("batch_size", [8, 7])
def test_fisher_under_jit_with_named_sharding_equals_single_device(axis_type, per_example, batch_size):
  from jax.sharding import AxisType, NamedSharding, PartitionSpec

  loss, params, data = _regression_problem(n=64)
  single = ju.fisher_diagonal(loss, params, data, batch_size=batch_size, per_example=per_example)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(getattr(AxisType, axis_type),))
  sharded = jax.device_put(data, NamedSharding(mesh, PartitionSpec("data")))
  assert len(sharded["x"].sharding.device_set) == 8
  fn = jax.jit(lambda p, d: ju.fisher_diagonal(loss, p, d, batch_size=batch_size, per_example=per_example))
  chex.assert_trees_all_close(fn(params, sharded), single, rtol=1e-5, atol=1e-8)


def _with_garbage(data, rows, seed=5):
  """``data`` + ``rows`` rows of random inputs and labels marked as padding (mask 0)."""
  rng = np.random.default_rng(seed)
  n = len(data["y"])
  return {"x": jnp.concatenate([data["x"], jnp.asarray(rng.normal(size=(rows, data["x"].shape[1])) * 5, jnp.float32)]),
          "y": jnp.concatenate([data["y"], jnp.asarray(rng.integers(0, 3, rows), jnp.int32)]),
          "mask": jnp.concatenate([jnp.ones(n), jnp.zeros(rows)])}


@pytest.mark.parametrize("method", ["decompose", "vmap"])
def test_padding_rows_add_nothing_and_are_not_counted_per_example(method):
  loss, params, data = _regression_problem()  # its loss ignores the mask: the pass must not need it
  want = jax.tree_util.tree_map(lambda a: a.astype(np.float32), _loop_fisher_per_example(loss, params, data))
  for batch_size in (4, 5):
    got = ju.fisher_diagonal(loss, params, _with_garbage(data, 9), batch_size=batch_size, method=method)
    chex.assert_trees_all_close(got, want, rtol=2e-5, atol=1e-7)
  from jaxunlearn._src.importance import bucketed

  padded = bucketed(data, 2)  # 12 chunks of 2 -> 12 (a multiple of 2): 24 rows, one of padding
  assert padded["x"].shape[0] == 24 and padded["mask"].tolist() == [1.0] * 23 + [0.0]
  chex.assert_trees_all_close(ju.fisher_diagonal(loss, params, padded, batch_size=2, method=method), want,
                              rtol=2e-5, atol=1e-7)


def test_minibatches_of_padding_only_are_not_counted():
  loss, params, data = _regression_problem()

  def masked(p, batch):  # the per-batch mode needs a loss that honours the mask (as the library's do)
    logits = jnp.tanh(batch["x"] @ p["w"]) * 2.0 + p["b"][None, :]
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][:, None], axis=1)[:, 0]
    m = batch.get("mask", jnp.ones_like(nll))
    return jnp.sum(nll * m) / jnp.maximum(jnp.sum(m), 1)

  # 23 real rows in minibatches of 5: 4 full, one of 3 (+ 2 padding), then one of padding only.
  want = _loop_fisher_per_batch(masked, params, data, 5)
  got = ju.fisher_diagonal(masked, params, _with_garbage(data, 7), batch_size=5, per_example=False)
  chex.assert_trees_all_close(got, jax.tree_util.tree_map(lambda a: a.astype(np.float32), want), rtol=2e-5, atol=1e-7)
