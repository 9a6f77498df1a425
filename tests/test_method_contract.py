"""The contract every classification method of the registry meets: a second request of the same
shapes compiles nothing, and the new methods' steps run with the batch sharded over 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxunlearn as ju
from jaxunlearn import methods
from jaxunlearn._src import adversarial, distill


@pytest.fixture(scope="module")
def setup(digits):
  train, test = digits
  forget, retain = ju.data.split_forget(train, ju.data.class_ids(train, 3))
  take = lambda d, n: ju.data.Dataset(x=d.x[:n], y=d.y[:n], ids=d.ids[:n], num_classes=10, name=d.name)  # noqa: E731
  base_apply, params = ju.models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
  calls = {"n": 0}

  def apply(p, x):  # counts the Python calls: a trace (or an eager call) each
    calls["n"] += 1
    return base_apply(p, x)

  init = ju.models.init_fn("mlp", train.input_shape, 10)
  held = test.y == 3
  holdout = ju.data.Dataset(x=test.x[held], y=test.y[held], ids=test.ids[held], num_classes=10, name="h")
  context = {"apply_fn": apply, "init_fn": init, "holdout": holdout}
  return take(forget, 48), take(retain, 160), apply, params, ju.losses.cross_entropy_loss(apply), context, calls


def _first_request(name, setup):
  """Runs ``name`` once (compiling what it needs); returns ``run(params, forget, seed)`` for the
  next request and the trace count so far."""
  forget, retain, _, params, loss, context, calls = setup
  m = methods.get(name)
  small = {k: v for k, v in {"epochs": 1, "rounds": 3, "steps": 3}.items() if k in m.defaults}
  needs = {k: context[k] for k in m.needs}

  def run(p, f, seed):
    return m(loss, p, forget=f, retain=retain, seed=seed, **needs, **small)

  run(params, forget, 0)
  return run, calls["n"]


@pytest.mark.parametrize("name", methods.names())
def test_a_second_request_compiles_nothing(name, setup):
  forget, _, _, params, _, _, calls = setup
  run, before = _first_request(name, setup)
  out = run(jax.tree.map(lambda p: p * 1.01, params), forget, 1)  # other values, the same shapes
  assert calls["n"] == before, f"{name} traced the model again on a second request"
  assert jax.tree.structure(out) == jax.tree.structure(params)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(out))


def _mesh():
  return jax.sharding.Mesh(np.array(jax.devices()), ("data",))


def _shard(tree, mesh):
  return jax.tree.map(lambda a: jax.device_put(a, NamedSharding(mesh, P("data"))), tree)


def _close(a, b, tol=1e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def test_the_new_steps_run_with_the_batch_sharded_over_8_devices(setup):
  assert len(jax.devices()) == 8
  forget, retain, apply, params, loss, context, _ = setup
  mesh = _mesh()
  rb = next(ju.data.batches(retain, 64, seed=0))
  fb = next(ju.data.batches(forget, 32, seed=0))
  student = jax.tree.map(lambda p: p * 0.9, params)
  max_loss, min_loss = distill._scrub_losses(apply, 2.0, 1.0, 0.5)
  kl_ascent = distill._kl_ascent_loss(apply, loss, 10.0, 1.0)
  bad = distill._bad_teacher_loss(apply, 1.0)
  mixed = {**rb, "y": (np.arange(64) % 2).astype(np.int32)}
  cases = [
      (max_loss, {**fb, "teacher": params}, "teacher"),
      (min_loss, {**rb, "teacher": params}, "teacher"),
      (kl_ascent, {"forget": fb, "retain": rb, "teacher": params}, "teacher"),
      (bad, {**mixed, "teacher": {"good": params, "bad": student}}, "teacher"),
  ]
  for fn, batch, replicated in cases:
    step = jax.jit(jax.value_and_grad(fn))
    want = step(student, batch)
    data = {k: v for k, v in batch.items() if k != replicated}
    got = step(student, {**_shard(data, mesh), replicated: batch[replicated]})
    _close(got, want)
  # The adversarial search: one jitted PGD program over a sharded batch of forget examples.
  attack = adversarial._pgd(apply, 5)
  radius = jnp.full(32, 0.5, jnp.float32)
  want = attack(params, fb["x"], fb["y"], radius)
  got = attack(params, *_shard((fb["x"], fb["y"], radius), mesh))
  _close(got[0], want[0], 1e-4)
  # freeze_entries and decaying_l1 inside a jitted optimizer step on sharded parameters.
  w = {"w": jnp.arange(64.0).reshape(8, 8)}
  keep = {"w": (jnp.arange(64).reshape(8, 8) % 3 == 0).astype(jnp.float32)}
  tx = optax.chain(ju.freeze_entries(keep), ju.decaying_l1(0.1, 10), optax.adam(0.1))
  step = jax.jit(lambda p, s, g: tx.update(g, s, p))
  want, _ = step(w, tx.init(w), jax.tree.map(jnp.ones_like, w))
  sw = _shard(w, mesh)
  got, _ = step(sw, tx.init(sw), jax.tree.map(jnp.ones_like, sw))
  _close(got, want)


@pytest.mark.parametrize("name", methods.names())
def test_a_request_of_another_size_compiles_nothing(name, setup):
  forget, _, _, params, _, _, calls = setup
  run, before = _first_request(name, setup)
  run(params, ju.data.Dataset(x=forget.x[:37], y=forget.y[:37], ids=forget.ids[:37], num_classes=10, name="f"), 0)
  assert calls["n"] == before, f"{name} traced the model again for a forget set of another size"
