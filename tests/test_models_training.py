import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxunlearn import data, losses, models, training


@pytest.mark.parametrize("name,shape", [("mlp", (8, 8, 1)), ("cnn", (8, 8, 1)), ("cnn", (40, 1)), ("mlp", (40, 1))])
def test_models_functional_form(name, shape):
  apply, params = models.create(name, shape, 10, key=jax.random.key(0))
  x = jnp.ones((3,) + shape)
  assert apply(params, x).shape == (3, 10)
  # apply is pure: jit gives the same logits and new params change them.
  np.testing.assert_allclose(jax.jit(apply)(params, x), apply(params, x), rtol=1e-5, atol=1e-6)
  other = models.init_fn(name, shape, 10)(jax.random.key(1))
  assert jax.tree_util.tree_structure(other) == jax.tree_util.tree_structure(params)
  assert not np.allclose(apply(other, x), apply(params, x))


def test_mlp_matches_numpy_forward():
  apply, params = models.create("mlp", (4,), 3, key=jax.random.key(0), hidden=(5,))
  p = params
  x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
  h = np.maximum(x @ np.asarray(p["hidden"][0]["kernel"]) + np.asarray(p["hidden"][0]["bias"]), 0)
  ref = h @ np.asarray(p["head"]["kernel"]) + np.asarray(p["head"]["bias"])
  np.testing.assert_allclose(apply(params, jnp.asarray(x)), ref, rtol=1e-5, atol=1e-5)


def test_bf16_model_keeps_dtype():
  apply, params = models.create("mlp", (8, 8, 1), 10, key=jax.random.key(0), dtype=jnp.bfloat16)
  assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree_util.tree_leaves(params))


def test_unknown_model_and_bad_cnn_shape():
  with pytest.raises(ValueError, match="unknown model 'resnet'"):
    models.create("resnet", (8, 8, 1), 10, key=jax.random.key(0))
  with pytest.raises(ValueError, match="CNN takes"):
    models.CNN((2, 2, 2, 1), 10, rngs=nnx.Rngs(0))


def test_fit_learns_digits_and_is_deterministic(digits):
  train, test = digits
  apply, params = models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
  loss = losses.cross_entropy_loss(apply)
  opt = optax.adam(1e-3)
  a = training.fit(loss, params, train, optimizer=opt, epochs=8, batch_size=128, seed=0)
  b = training.fit(loss, params, train, optimizer=opt, epochs=8, batch_size=128, seed=0)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert training.dataset_accuracy(apply, a, test) > 0.93
  # accuracy agrees with an explicit NumPy count.
  logits = np.asarray(apply(a, jnp.asarray(test.x)))
  assert training.dataset_accuracy(apply, a, test) == pytest.approx(np.mean(logits.argmax(1) == test.y))


def test_fit_padded_batch_equals_unpadded_gradient(digits):
  train, _ = digits
  apply, params = models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
  loss = losses.cross_entropy_loss(apply)
  small = train.take(np.arange(37))
  padded = next(data.batches(small, 64, seed=None, shuffle=False))
  plain = {"x": jnp.asarray(small.x), "y": jnp.asarray(small.y)}
  g1 = jax.grad(loss)(params, padded)
  g2 = jax.grad(loss)(params, plain)
  for x, y in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape,window", [((3, 9, 7, 2), (3, 3)), ((3, 10, 8, 3), (3, 3)), ((3, 41, 2), (3,)), ((2, 6, 5, 1), (2, 2))])
def test_cnn_building_blocks_match_flax(shape, window):
  # The CNN computes convolutions as matmuls over shifted inputs and pooling as reshape + max
  # (faster on XLA:CPU); Flax's Conv and max_pool are the independent reference.
  from flax import nnx

  from jaxunlearn._src.models import _conv_same, _max_pool2

  x = jax.random.normal(jax.random.key(0), shape)
  conv = nnx.Conv(shape[-1], 4, window, padding="SAME", rngs=nnx.Rngs(1))
  np.testing.assert_allclose(_conv_same(x, conv.kernel[...], conv.bias[...]), conv(x), rtol=1e-5, atol=1e-5)
  w = (2,) * (len(shape) - 2)
  np.testing.assert_array_equal(_max_pool2(x), nnx.max_pool(x, w, strides=w))


class _BNNet(nnx.Module):
  """A user's model with non-parameter state: batch-norm running statistics."""

  def __init__(self, rngs):
    self.l1 = nnx.Linear(64, 32, rngs=rngs)
    self.bn = nnx.BatchNorm(32, momentum=0.8, rngs=rngs)
    self.l2 = nnx.Linear(32, 10, rngs=rngs)

  def __call__(self, x):
    return self.l2(jax.nn.relu(self.bn(self.l1(x.reshape(x.shape[0], -1)))))


def _bn_loss():
  graphdef, params, stats = nnx.split(_BNNet(nnx.Rngs(0)), nnx.Param, nnx.BatchStat)

  def loss(p, batch, state):
    model = nnx.merge(graphdef, p, state, copy=True)
    logits = model(batch["x"])
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, batch["y"][:, None].astype(jnp.int32), axis=-1)[:, 0]
    mask = batch["mask"]
    return jnp.sum(nll * mask) / jnp.sum(mask), nnx.state(model, nnx.BatchStat)

  return loss, params, stats


def test_fit_with_non_parameter_state_matches_an_explicit_loop(digits):
  train, _ = digits
  ds = train.take(train.ids[:300])
  loss, params, stats = _bn_loss()
  opt = optax.sgd(0.05)
  got_p, got_s = training.fit(loss, params, ds, optimizer=opt, epochs=2, batch_size=64, seed=3, state=stats)
  # Explicit loop, no jit: gradient of the loss at the current state, then the state it returns.
  p, s, o = params, stats, opt.init(params)
  for epoch in range(2):
    for batch in data.batches(ds, 64, seed=3, epoch=epoch):
      (_, new_s), g = jax.value_and_grad(loss, has_aux=True)(p, batch, s)
      u, o = opt.update(g, o, p)
      p, s = optax.apply_updates(p, u), new_s
  for a, b in zip(jax.tree.leaves((got_p, got_s)), jax.tree.leaves((p, s))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
  # The statistics did move (a loss closing over them would have frozen them at the first trace).
  assert not np.allclose(np.asarray(jax.tree.leaves(got_s["bn"]["mean"])[0]), np.asarray(jax.tree.leaves(stats["bn"]["mean"])[0]))
  with pytest.raises(ValueError, match="micro_batch and state cannot be combined"):
    training.fit(loss, params, ds, optimizer=opt, epochs=1, batch_size=64, seed=0, state=stats, micro_batch=8)


def test_recipes_carry_non_parameter_state(digits):
  from jaxunlearn import recipes

  train, _ = digits
  forget, retain = train.take(train.ids[:40]), train.take(train.ids[40:200])
  loss, params, stats = _bn_loss()
  opt = optax.sgd(0.05)
  p1, s1 = recipes.finetune(loss, params, retain=retain, optimizer=opt, epochs=1, batch_size=32, seed=0, state=stats)
  p2, s2 = training.fit(loss, params, retain, optimizer=opt, epochs=1, batch_size=32, seed=0, state=stats)
  for a, b in zip(jax.tree.leaves((p1, s1)), jax.tree.leaves((p2, s2))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  p3, s3 = recipes.gradient_difference(loss, params, forget=forget, retain=retain, optimizer=opt, epochs=1,
                                       batch_size=32, seed=0, state=stats)
  # Explicit loop of gradient difference with state: forget batch, then retain batch, per step.
  p, s, o = params, stats, opt.init(params)
  forget_batches = [b for e in range(3) for b in data.batches(forget, 32, seed=1, epoch=e)]
  for i, rb in enumerate(data.batches(retain, 32, seed=0, epoch=0)):
    gf, s = jax.grad(loss, has_aux=True)(p, forget_batches[i], s)
    gr, s = jax.grad(loss, has_aux=True)(p, rb, s)
    u, o = opt.update(jax.tree.map(lambda r, f: r - f, gr, gf), o, p)
    p = optax.apply_updates(p, u)
  for a, b in zip(jax.tree.leaves((p3, s3)), jax.tree.leaves((p, s))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)


def test_fit_reports_progress_per_epoch(digits):
  train, _ = digits
  apply, params = models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
  seen = []
  out = training.fit(losses.cross_entropy_loss(apply), params, train.take(train.ids[:64]), optimizer=optax.sgd(0.1),
                     epochs=3, batch_size=32, seed=0, progress=lambda e, n: seen.append((e, n)))
  assert seen == [(1, 3), (2, 3), (3, 3)] and jax.tree.structure(out) == jax.tree.structure(params)


def test_training_accuracy_is_a_deprecated_alias():
  train, test = data.load("digits")
  apply, params = models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
  with pytest.warns(DeprecationWarning, match="dataset_accuracy"):
    old = training.accuracy(apply, params, test)
  logits = training.predict(apply, params, test.x)
  assert old == training.dataset_accuracy(apply, params, test) == pytest.approx(np.mean(logits.argmax(1) == test.y))


@pytest.mark.parametrize("axis_type", ["explicit", "auto"])
def test_fit_on_a_mesh_is_data_parallel_and_equals_one_device(digits, axis_type):
  train, _ = digits
  ds = train.take(train.ids[:200])  # 200 = 3 batches of 64 + a padded one
  apply, params = models.create("mlp", train.input_shape, 10, key=jax.random.key(2), hidden=(32,))
  loss = losses.cross_entropy_loss(apply)
  kw = dict(optimizer=optax.adam(1e-2), epochs=2, batch_size=64, seed=4)
  alone = training.fit(loss, params, ds, **kw)
  kind = jax.sharding.AxisType.Explicit if axis_type == "explicit" else jax.sharding.AxisType.Auto
  mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(kind, kind))
  spread = training.fit(loss, params, ds, mesh=mesh, **kw)
  for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(spread)):
    assert b.sharding.is_fully_replicated and len(b.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="does not split evenly over the mesh's 8 devices"):
    training.fit(loss, params, ds, mesh=mesh, **{**kw, "batch_size": 60})
