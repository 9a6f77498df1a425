"""The Fisher diagonal over sharded data, as users shard it: multi-layer models, explicit and auto
meshes, with and without ``jax.set_mesh``, under ``jit``, ``pmap`` and ``shard_map``; every result
checked against an explicit per-example (or per-minibatch) loop on one device."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxunlearn as ju
from jaxunlearn._src import fastfisher
from jaxunlearn._src.base import vary

N = 32  # 4 examples per device on the 8 simulated devices


def _mlp_loss(p, b):
  h = jnp.tanh(b["x"] @ p["w1"] + p["b1"][None])
  h = jax.nn.relu(h @ p["w2"] + p["b2"][None])
  logits = h @ p["w3"] + p["b3"][None]
  return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, b["y"][:, None], -1)[:, 0])


def _mlp():
  k = jax.random.split(jax.random.key(0), 6)
  params = {"w1": jax.random.normal(k[0], (6, 16)) * 0.5, "b1": 0.1 * jax.random.normal(k[1], (16,)),
            "w2": jax.random.normal(k[2], (16, 8)) * 0.3, "b2": jnp.full((8,), 0.05),
            "w3": jax.random.normal(k[3], (8, 3)), "b3": jnp.zeros(3)}
  data = {"x": jax.random.normal(k[4], (N, 6)), "y": jax.random.randint(k[5], (N,), 0, 3)}
  return _mlp_loss, params, data


class _Net(nnx.Module):
  def __init__(self, rngs):
    self.l1 = nnx.Linear(6, 12, rngs=rngs)
    self.norm = nnx.LayerNorm(12, rngs=rngs)
    self.l2 = nnx.Linear(12, 3, rngs=rngs)

  def __call__(self, x):
    return self.l2(jax.nn.gelu(self.norm(self.l1(x))))


def _nnx():
  graphdef, params = nnx.split(_Net(nnx.Rngs(1)), nnx.Param)

  def loss(p, b):
    logits = nnx.merge(graphdef, p)(b["x"])
    return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, b["y"][:, None], -1)[:, 0])

  _, _, data = _mlp()
  return loss, params, data


MODELS = {"mlp": _mlp, "nnx": _nnx}


_REFERENCES = {}


def _reference(model, batch_size=None):
  if (model, batch_size) not in _REFERENCES:
    _REFERENCES[model, batch_size] = _loop(*MODELS[model](), batch_size)
  return _REFERENCES[model, batch_size]


def _loop(loss, params, data, batch_size=None):
  """Explicit loop in float64: mean over examples of squared per-example gradients, or (with
  ``batch_size``) mean over contiguous minibatches of squared minibatch gradients."""
  step = 1 if batch_size is None else batch_size
  starts = range(0, N, step)
  acc = jax.tree.map(lambda p: np.zeros(p.shape, np.float64), params)
  for s in starts:
    g = jax.grad(loss)(params, {k: v[s:s + step] for k, v in data.items()})
    acc = jax.tree.map(lambda a, gg: a + np.square(np.asarray(gg, np.float64)), acc, g)
  return jax.tree.map(lambda a: a / len(starts), acc)


def _close(got, want):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=2e-4, atol=1e-6 * float(np.max(np.abs(w))))


def _mesh(axis_type, shape=(8,), names=("data",)):
  return jax.make_mesh(shape, names, axis_types=(getattr(AxisType, axis_type),) * len(shape))


@pytest.mark.parametrize("model, axis_type, set_mesh", [
    ("mlp", "Explicit", False), ("mlp", "Explicit", True), ("mlp", "Auto", False), ("nnx", "Explicit", False),
    ("nnx", "Auto", True)])
@pytest.mark.parametrize("per_example, batch_size", [(True, 2), (True, 32), (False, 4), (False, 8)])
def test_jit_with_sharded_data(model, axis_type, set_mesh, per_example, batch_size):
  # (False, 8): 4 minibatches for 8 devices, each straddling two devices.
  loss, params, data = MODELS[model]()
  want = _reference(model, None if per_example else batch_size)
  mesh = _mesh(axis_type)
  sharded = jax.device_put(data, NamedSharding(mesh, P("data")))
  fn = jax.jit(lambda p, d: ju.fisher_diagonal(loss, p, d, batch_size=batch_size, per_example=per_example))
  if set_mesh:
    with jax.set_mesh(mesh):
      got = fn(params, sharded)
  else:
    got = fn(params, sharded)
  _close(got, want)
  # Called outside jit too (fisher_diagonal is itself jitted).
  _close(ju.fisher_diagonal(loss, params, sharded, batch_size=batch_size, per_example=per_example), want)


@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
def test_two_axis_mesh_and_explicitly_sharded_params(axis_type):
  loss, params, data = _mlp()
  want = _reference("mlp")
  mesh = _mesh(axis_type, (4, 2), ("data", "model"))
  sharded = jax.device_put(data, NamedSharding(mesh, P(("data", "model"))))
  # A kernel split over "model" (as tensor parallelism would) and replicated over "data".
  placed = dict(params, w2=jax.device_put(params["w2"], NamedSharding(mesh, P(None, "model"))))
  got = jax.jit(lambda p, d: ju.fisher_diagonal(loss, p, d, batch_size=2))(placed, sharded)
  _close(got, want)


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
@pytest.mark.parametrize("method", ["decompose", "vmap"])
@pytest.mark.parametrize("per_example", [True, False])
def test_shard_map_with_replicated_params(model, axis_type, method, per_example):
  # Each device holds 4 examples; with per_example=False and batch_size 2 the minibatches are the
  # single-device ones. Replicated params must not have their per-example gradients summed.
  loss, params, data = MODELS[model]()
  want = _reference(model, None if per_example else 2)
  mesh = _mesh(axis_type)
  sharded = jax.device_put(data, NamedSharding(mesh, P("data")))
  fn = jax.shard_map(
      lambda p, d: ju.fisher_diagonal(loss, p, d, batch_size=2, per_example=per_example, axis_name="data",
                                      method=method),
      mesh=mesh, in_specs=(P(), P("data")), out_specs=P())
  _close(jax.jit(fn)(params, sharded), want)
  with jax.set_mesh(mesh):
    _close(fn(params, sharded), want)


def test_shard_map_keeps_the_fast_path():
  loss, params, data = _mlp()
  mesh = _mesh("Explicit")
  seen = []

  def body(p, d):
    p = jax.tree.map(lambda x: vary(x, ("data",)), p)
    seen.append(fastfisher.decomposed_leaves(loss, p, d))
    return ju.fisher_diagonal(loss, p, d, batch_size=4, axis_name="data")

  sharded = jax.device_put(data, NamedSharding(mesh, P("data")))
  jax.shard_map(body, mesh=mesh, in_specs=(P(), P("data")), out_specs=P())(params, sharded)
  assert sorted(seen[0]) == sorted(params)


@pytest.mark.parametrize("per_example", [True, False])
def test_pmap_multilayer(per_example):
  loss, params, data = _nnx()
  want = _reference("nnx", None if per_example else 2)
  split = jax.tree.map(lambda x: x.reshape((8, 4) + x.shape[1:]), data)
  fn = jax.pmap(lambda p, d: ju.fisher_diagonal(loss, p, d, batch_size=2, per_example=per_example, axis_name="i"),
                axis_name="i", in_axes=(None, 0))
  out = fn(params, split)
  for dev in (0, 7):
    _close(jax.tree.map(lambda x: x[dev], out), want)


def test_progress_counts_chunks_in_order_without_changing_the_result():
  def loss(p, b):
    return jnp.mean((b["x"] @ p["w"] - b["y"]) ** 2)

  x = np.random.default_rng(1).normal(size=(64, 3)).astype(np.float32)
  data, params = {"x": x, "y": x.sum(1)}, {"w": jnp.ones(3)}
  plain = ju.fisher_diagonal(loss, params, data, batch_size=10)["w"]
  seen = []

  def record(done, total):
    seen.append((done, total))

  # 6 full chunks and a remainder of 4: the remainder is reported last.
  with_progress = ju.fisher_diagonal(loss, params, data, batch_size=10, progress=record)["w"]
  assert seen == [(i, 7) for i in range(1, 8)]
  np.testing.assert_array_equal(np.asarray(with_progress), np.asarray(plain))
  # Explicitly sharded data: the first of 8 devices reports its own 2 chunks of 4 examples.
  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,))
  sharded = jax.tree.map(lambda a: jax.device_put(a, NamedSharding(mesh, P("data"))), data)
  seen.clear()
  out = ju.fisher_diagonal(loss, params, sharded, batch_size=4, progress=record)["w"]
  assert seen == [(1, 2), (2, 2)]
  np.testing.assert_allclose(np.asarray(out), np.asarray(plain), rtol=1e-5)
  # pmap: one report stream, not eight.
  seen.clear()
  per_device = jax.tree.map(lambda a: a.reshape((8, 8) + a.shape[1:]), data)
  out = jax.pmap(lambda p, d: ju.fisher_diagonal(loss, p, d, batch_size=4, axis_name="i", progress=record),
                 axis_name="i", in_axes=(None, 0))(params, per_device)["w"]
  jax.block_until_ready(out)
  assert seen == [(1, 2), (2, 2)]
  np.testing.assert_allclose(np.asarray(out[0]), np.asarray(plain), rtol=1e-5)
