"""The unlearning losses against NumPy references, and labels out of range."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxunlearn as ju


def _np_log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_losses_against_numpy():
  rng = np.random.default_rng(7)
  w = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  w_teacher = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  apply = lambda p, x: x @ p  # noqa: E731
  x = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  y = jnp.asarray([0, 1, 2, 3, 4, 0], jnp.int32)
  mask = jnp.asarray([1, 1, 1, 1, 0, 0], jnp.float32)
  batch = {"x": x, "y": y, "mask": mask, "ids": jnp.arange(6)}
  logp = _np_log_softmax(np.asarray(x) @ np.asarray(w))
  m = np.asarray(mask, bool)
  ce = -logp[np.arange(6), np.asarray(y)]
  assert float(ju.losses.cross_entropy_loss(apply)(w, batch)) == pytest.approx(ce[m].mean(), rel=1e-5)
  kl_u = (-np.log(5) - logp.mean(-1))
  assert float(ju.losses.uniform_kl_loss(apply)(w, batch)) == pytest.approx(kl_u[m].mean(), rel=1e-5)
  t = 2.0
  tlogp = _np_log_softmax(np.asarray(x) @ np.asarray(w_teacher) / t)
  slogp = _np_log_softmax(np.asarray(x) @ np.asarray(w) / t)
  kl_t = (np.exp(tlogp) * (tlogp - slogp)).sum(-1) * t * t
  assert float(ju.losses.teacher_kl_loss(apply, w_teacher, temperature=t)(w, batch)) == pytest.approx(kl_t[m].mean(), rel=1e-5)
  assert float(ju.losses.teacher_kl_loss(apply, w)(w, batch)) == pytest.approx(0.0, abs=1e-6)


def test_random_label_loss_never_uses_the_true_label():
  apply = lambda p, x: jnp.broadcast_to(p, (x.shape[0], 4))  # noqa: E731
  n = 400
  y = jnp.asarray(np.arange(n) % 4, jnp.int32)
  batch = {"x": jnp.zeros((n, 1)), "y": y, "ids": jnp.arange(n)}
  loss = ju.losses.random_label_loss(apply, 4, key=jax.random.key(0))
  # With logits one-hot on the true class, every target is wrong: the loss equals log-prob of a
  # non-true class for every example.
  big = 30.0
  onehot_true = lambda p, x: big * jax.nn.one_hot(y, 4)  # noqa: E731
  l_true = ju.losses.random_label_loss(onehot_true, 4, key=jax.random.key(0))(None, batch)
  expected = -_np_log_softmax(np.array([big, 0, 0, 0]))[1]
  assert float(l_true) == pytest.approx(expected, rel=1e-4)
  # Same example, same label every call; the loss is finite for uniform logits.
  assert float(loss(jnp.zeros(4), batch)) == pytest.approx(np.log(4), rel=1e-5)
  with pytest.raises(ValueError, match="ids"):
    loss(jnp.zeros(4), {"x": batch["x"], "y": y})


def test_labels_out_of_range_are_never_a_silent_zero_gradient():
  rng = np.random.default_rng(8)
  w = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  apply = lambda p, x: x @ p  # noqa: E731
  x = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  loss = ju.losses.cross_entropy_loss(apply)
  for y in ([0, 1, 2, 3, 5, 0], [0, -1, 2, 3, 4, 0]):
    bad = {"x": x, "y": jnp.asarray(y, jnp.int32)}
    # Concrete labels: a clear error naming them and the model's output size.
    with pytest.raises(ValueError, match=r"labels \[(5|-1)\] are out of range for a model with 5 outputs"):
      loss(w, bad)
    with pytest.raises(ValueError, match=r"out of range"):
      ju.losses.random_label_loss(apply, 5, key=jax.random.key(0))(w, dict(bad, ids=jnp.arange(6)))
    # Traced labels: the loss and the gradient are NaN (a gather out of range gave a zero gradient).
    value, grad = jax.jit(jax.value_and_grad(loss))(w, bad)
    assert np.isnan(float(value)) and np.isnan(np.asarray(grad)).any()
    # fisher_diagonal refuses the non-finite result instead of returning zeros.
    with pytest.raises(ValueError, match="the Fisher diagonal has non-finite values.*labels are in range"):
      ju.fisher_diagonal(loss, w, bad, batch_size=2)
  # A padded example (mask 0) may carry any label; valid examples' gradients are unchanged.
  y = jnp.asarray([0, 1, 2, 3, 4, 99], jnp.int32)
  mask = jnp.asarray([1, 1, 1, 1, 1, 0], jnp.float32)
  g_pad = jax.jit(jax.grad(loss))(w, {"x": x, "y": y, "mask": mask})
  logp = _np_log_softmax(np.asarray(x[:5]) @ np.asarray(w))
  # d/dW of mean_i -logp[i, y_i] = x^T (softmax - onehot) / n, in float64.
  probs = np.exp(logp)
  probs[np.arange(5), np.arange(5)] -= 1.0
  np.testing.assert_allclose(g_pad, np.asarray(x[:5], np.float64).T @ probs / 5, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="labels must be integers"):
    loss(w, {"x": x, "y": jnp.zeros(6, jnp.float32)})


def test_dataset_refuses_labels_out_of_range():
  with pytest.raises(ValueError, match=r"labels \[10\] are out of range for num_classes=10"):
    ju.data.Dataset(x=np.zeros((2, 3), np.float32), y=np.array([1, 10]), ids=np.arange(2), num_classes=10, name="t")
  with pytest.raises(ValueError, match="labels y must be integers"):
    ju.data.Dataset(x=np.zeros((2, 3), np.float32), y=np.array([1.0, 2.0]), ids=np.arange(2), num_classes=10, name="t")
