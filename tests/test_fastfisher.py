"""The decomposed per-example Fisher against an explicit per-example loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxunlearn
from jaxunlearn import losses, models
from jaxunlearn._src import fastfisher


def _explicit(loss_fn, params, chunk):
  """Sum over examples of squared gradients, one jax.grad call per example, squares in NumPy."""
  n = len(jax.tree.leaves(chunk)[0])
  total = jax.tree.map(lambda p: np.zeros(np.shape(p), np.float64), params)
  grad = jax.jit(jax.grad(loss_fn))
  for i in range(n):
    g = grad(params, jax.tree.map(lambda x: x[i:i + 1], chunk))
    total = jax.tree.map(lambda t, g: t + np.square(np.asarray(g, np.float64)), total, g)
  return total


def _check(loss_fn, params, chunk, rtol=2e-5, global_atol=False):
  """``global_atol``: absolute tolerance from the largest square over all leaves (for leaves whose
  true gradient is zero, like an attention key bias, whose squares are rounding noise)."""
  got = jax.jit(lambda p, c: fastfisher.squared_grad_sum(loss_fn, p, c))(params, chunk)
  want = _explicit(loss_fn, params, chunk)
  top = max(float(np.max(w)) for w in jax.tree.leaves(want))
  for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
    atol = 1e-7 * (top if global_atol else np.max(w))
    np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=rtol, atol=atol, err_msg=str(path))


@pytest.fixture(scope="module")
def chunk(digits):
  train, _ = digits
  return {"x": jnp.asarray(train.x[:24]), "y": jnp.asarray(train.y[:24])}


def test_flax_mlp_is_fully_decomposed(chunk):
  apply, params = models.create("mlp", (8, 8, 1), 10, key=jax.random.key(0))
  loss = losses.cross_entropy_loss(apply)
  assert len(fastfisher.decomposed_leaves(loss, params, chunk)) == len(jax.tree.leaves(params))
  _check(loss, params, chunk)


def test_cnn_is_fully_decomposed(chunk):
  # Convolutions are matmuls over patches: kernels and biases applied to many rows per example.
  apply, params = models.create("cnn", (8, 8, 1), 10, key=jax.random.key(1))
  loss = losses.cross_entropy_loss(apply)
  assert fastfisher.decomposed_leaves(loss, params, chunk) == [
      "convs/0/bias", "convs/0/kernel", "convs/1/bias", "convs/1/kernel", "fc/bias", "fc/kernel", "head/bias",
      "head/kernel"]
  _check(loss, params, chunk)


def _token_model():
  # A dense layer over tokens [B, T, D] (a sequence axis), mean-pooled, then a head.
  k = jax.random.split(jax.random.key(5), 3)
  params = {"embed": jax.random.normal(k[0], (16, 12)) * 0.3, "w": jax.random.normal(k[1], (12, 20)) * 0.3,
            "b": jnp.full(20, 0.05), "head": jax.random.normal(k[2], (20, 10)) * 0.3}

  def loss(p, b):
    tokens = b["x"].reshape(b["x"].shape[0], 4, 16)  # 4 tokens of 16 features per example
    h = jnp.tanh(jnp.tanh(tokens @ p["embed"]) @ p["w"] + p["b"][None, None, :])
    logits = jnp.mean(h, axis=1) @ p["head"]
    return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, b["y"][:, None], -1)[:, 0])

  return loss, params


def test_dense_layers_over_a_sequence_axis(chunk):
  loss, params = _token_model()
  assert fastfisher.decomposed_leaves(loss, params, chunk) == ["b", "embed", "head", "w"]
  _check(loss, params, chunk)


def test_row_kernels_in_groups_of_examples(chunk, monkeypatch):
  # Groups of 2, 3 and 1 examples (23 examples: the last group padded with zero examples), and the
  # grouping rule on and off CPU: 500 floats hold two 12 x 20 or 16 x 12 kernel gradients.
  loss, params = _token_model()
  part = {k: v[:23] for k, v in chunk.items()}
  for group in (2, 3, 1, 23):
    monkeypatch.setattr(fastfisher, "_rows_group", lambda b, k, n, group=group: group)
    _check(loss, params, part)
  monkeypatch.undo()
  for backend, limit in (("gpu", "_ROWS_LIMIT"), ("cpu", "_CPU_ROWS_LIMIT")):
    monkeypatch.setattr(fastfisher, limit, 500)
    monkeypatch.setattr(fastfisher.jax, "default_backend", lambda backend=backend: backend)
    assert fastfisher._rows_group(23, 12, 20) == 2 and fastfisher._rows_group(23, 16, 12) == 2
    assert fastfisher._rows_group(23, 40, 40) == 1 and fastfisher._rows_group(3, 2, 2) == 3


def test_attention_block_is_fully_decomposed(chunk):
  from flax import nnx

  class Block(nnx.Module):
    def __init__(self, rngs):
      self.embed = nnx.Linear(16, 12, rngs=rngs)
      self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=12, qkv_features=8, out_features=12,
                                         decode=False, rngs=rngs)
      self.norm = nnx.LayerNorm(12, rngs=rngs)
      self.head = nnx.Linear(12, 10, rngs=rngs)

    def __call__(self, x):
      t = self.embed(x.reshape(x.shape[0], 4, 16))
      return self.head(jnp.mean(self.norm(t + self.attn(t)), axis=1))

  apply, params = models.functional(Block(nnx.Rngs(0)))
  loss = losses.cross_entropy_loss(apply)
  # Query/key/value kernels are [features, heads, head_dim], the output kernel [heads, head_dim, out].
  assert fastfisher.decomposed_leaves(loss, params, chunk) == [
      "attn/key/bias", "attn/key/kernel", "attn/out/bias", "attn/out/kernel", "attn/query/bias",
      "attn/query/kernel", "attn/value/bias", "attn/value/kernel", "embed/bias", "embed/kernel", "head/bias",
      "head/kernel", "norm/bias", "norm/scale"]
  _check(loss, params, chunk, global_atol=True)


def test_a_bias_or_scale_broadcast_over_channels_first_is_not_taken_for_a_trailing_one(chunk):
  # [B, C, W] with C == W == 8: a bias and a scale applied along the channel axis (not the trailing
  # one) must fall back to vmap(grad); on the trailing axis they are decomposed.
  k = jax.random.split(jax.random.key(6), 2)
  params = {"w": jax.random.normal(k[0], (8, 8)) * 0.3, "b": jnp.linspace(-0.5, 0.5, 8),
            "s": jnp.linspace(0.5, 1.5, 8), "head": jax.random.normal(k[1], (64, 10)) * 0.1}

  def make(trailing):
    def loss(p, b):
      h = b["x"].reshape(b["x"].shape[0], 8, 8) @ p["w"]
      along = (lambda v: v[None, None, :]) if trailing else (lambda v: v[None, :, None])
      h = jnp.tanh(h + along(p["b"])) * along(p["s"])
      logits = h.reshape(h.shape[0], -1) @ p["head"]
      return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, b["y"][:, None], -1)[:, 0])
    return loss

  assert fastfisher.decomposed_leaves(make(False), params, chunk) == ["head", "w"]
  assert fastfisher.decomposed_leaves(make(True), params, chunk) == ["b", "head", "s", "w"]
  _check(make(False), params, chunk)
  _check(make(True), params, chunk)


def test_plain_jax_loss_with_penalty_tied_weights_and_no_bias(chunk):
  k = jax.random.split(jax.random.key(2), 3)
  params = {"w1": jax.random.normal(k[0], (64, 32)) * 0.2, "b1": jnp.full(32, 0.1),
            "tied": jax.random.normal(k[1], (32, 32)) * 0.2, "w2": jax.random.normal(k[2], (32, 10)) * 0.2,
            "scale": jnp.ones(32)}

  def loss(p, b):
    x = b["x"].reshape(b["x"].shape[0], -1)
    h = jnp.tanh(x @ p["w1"] + p["b1"][None, :])
    h = jnp.tanh(h @ p["tied"]) * p["scale"][None, :]
    h = jnp.tanh(h @ p["tied"])  # used twice: not decomposable, must fall back
    logits = h @ p["w2"]  # no bias
    nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, b["y"][:, None], -1)[:, 0]
    return jnp.mean(nll) + 1e-2 * jnp.sum(p["w1"] ** 2)  # the penalty makes w1 not per-example

  assert fastfisher.decomposed_leaves(loss, params, chunk) == ["b1", "scale", "w2"]
  _check(loss, params, chunk)


def test_fisher_diagonal_methods_agree(digits):
  train, _ = digits
  apply, params = models.create("mlp", (8, 8, 1), 10, key=jax.random.key(3))
  loss = losses.cross_entropy_loss(apply)
  data = {"x": train.x[:300], "y": train.y[:300]}
  a = jaxunlearn.fisher_diagonal(loss, params, data, batch_size=64)
  b = jaxunlearn.fisher_diagonal(loss, params, data, batch_size=64, method="vmap")
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=1e-12)
  with pytest.raises(ValueError, match="unknown method"):
    jaxunlearn.fisher_diagonal(loss, params, data, batch_size=64, method="magic")
