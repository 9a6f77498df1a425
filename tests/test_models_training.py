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
  assert training.accuracy(apply, a, test) > 0.93
  # accuracy agrees with an explicit NumPy count.
  logits = np.asarray(apply(a, jnp.asarray(test.x)))
  assert training.accuracy(apply, a, test) == pytest.approx(np.mean(logits.argmax(1) == test.y))


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
