"""The language-model losses against explicit NumPy loops (prompt and padding labels ignored)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.lm import losses

B, T, V = 4, 9, 13


def _case(seed=0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(B, T, V)).astype(np.float32) * 2
  ref = rng.normal(size=(B, T, V)).astype(np.float32) * 2
  labels = rng.integers(0, V, size=(B, T))
  labels[:, :3] = -100  # prompt
  labels[1, 6:] = -100  # padding
  labels[2, 3] = -100  # a hole
  return logits, ref, labels


def _log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max()
  return z - m - np.log(np.sum(np.exp(z - m)))


def _scored(labels):
  """(b, t, next label) for every scored next-token position."""
  return [(b, t, labels[b, t + 1]) for b in range(labels.shape[0]) for t in range(labels.shape[1] - 1)
          if labels[b, t + 1] != -100]


def _seq_nll(logits, labels):
  out = np.zeros(labels.shape[0])
  for b, t, y in _scored(labels):
    out[b] -= _log_softmax(logits[b, t])[y]
  return out


def _count(labels):
  out = np.zeros(labels.shape[0])
  for b, _, _ in _scored(labels):
    out[b] += 1
  return out


def _log_sigmoid(x):
  return -np.log1p(np.exp(-x))


def test_sequence_nll_and_nll():
  logits, _, labels = _case()
  np.testing.assert_allclose(losses.sequence_nll(logits, labels), _seq_nll(logits, labels), rtol=1e-5)
  np.testing.assert_allclose(losses.nll(logits, labels), _seq_nll(logits, labels).sum() / _count(labels).sum(), rtol=1e-5)
  np.testing.assert_array_equal(losses.token_counts(labels), _count(labels))


def test_npo_dpo_simnpo():
  logits, ref, labels = _case(1)
  beta = 0.7
  log_ratio = -_seq_nll(logits, labels) + _seq_nll(ref, labels)
  expected = -(2 / beta) * np.mean(_log_sigmoid(-beta * log_ratio))
  np.testing.assert_allclose(losses.npo(logits, ref, labels, beta=beta), expected, rtol=1e-5)
  w_logits, w_ref, w_labels = _case(2)
  win = -_seq_nll(w_logits, w_labels) + _seq_nll(w_ref, w_labels)
  expected = -(2 / beta) * np.mean(_log_sigmoid(beta * (win - log_ratio)))
  got = losses.dpo(w_logits, w_ref, w_labels, logits, ref, labels, beta=beta)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # NPO is DPO without a winner (open-unlearning computes it so).
  zero = np.zeros_like(w_logits)
  np.testing.assert_allclose(losses.dpo(zero, zero, w_labels, logits, ref, labels, beta=beta),
                             losses.npo(logits, ref, labels, beta=beta), rtol=1e-5)
  delta = 0.3
  x = _seq_nll(logits, labels) / _count(labels) - delta
  np.testing.assert_allclose(losses.simnpo(logits, labels, beta=4.5, delta=delta),
                             -(2 / 4.5) * np.mean(_log_sigmoid(4.5 * x)), rtol=1e-5)


def test_undial_masks_ignored_labels():
  logits, ref, labels = _case(3)
  beta = 10.0
  total, n = 0.0, 0
  for b, t, y in _scored(labels):
    z = np.asarray(ref[b, t], np.float64).copy()
    z[y] -= beta
    q = np.exp(_log_softmax(z))
    total += -np.sum(q * _log_softmax(logits[b, t]))
    n += 1
  np.testing.assert_allclose(losses.undial(logits, ref, labels, beta=beta), total / n, rtol=1e-5)


def test_kl_to_reference_all_positions_and_masked():
  logits, ref, labels = _case(4)
  kl = np.zeros((B, T))
  for b in range(B):
    for t in range(T):
      p, q = _log_softmax(ref[b, t]), _log_softmax(logits[b, t])
      kl[b, t] = np.sum(np.exp(p) * (p - q))
  np.testing.assert_allclose(losses.kl_to_reference(logits, ref), kl.mean(), rtol=1e-5)
  mask = (labels != -100).astype(np.int32)
  np.testing.assert_allclose(losses.kl_to_reference(logits, ref, mask), (kl * mask).sum() / mask.sum(), rtol=1e-5)
  assert float(losses.kl_to_reference(ref, ref)) == pytest.approx(0.0, abs=1e-6)


def test_rmu_activation_loss():
  rng = np.random.default_rng(5)
  acts, target = rng.normal(size=(3, 6, 8)), rng.normal(size=8)
  mask = rng.integers(0, 2, size=(3, 6))
  mask[:, 0] = 1
  per = []
  for b in range(3):
    s = sum(np.mean((acts[b, t] - target) ** 2) for t in range(6) if mask[b, t])
    per.append(s / mask[b].sum())
  np.testing.assert_allclose(losses.rmu_activation_loss(acts, target, mask), np.mean(per), rtol=1e-5)


def test_losses_jit_and_differentiate():
  logits, ref, labels = _case(6)
  g = jax.jit(jax.grad(lambda z: losses.npo(z, ref, labels, beta=0.1)))(jnp.asarray(logits))
  # Positions whose next label is ignored get no gradient.
  assert np.all(np.asarray(g)[:, :2] == 0) and np.all(np.asarray(g)[1, 5:] == 0)
  assert np.all(np.isfinite(np.asarray(g)))


def test_bad_shapes_are_named():
  with pytest.raises(ValueError, match=r"\[B, T, V\]"):
    losses.nll(np.zeros((2, 3)), np.zeros((2, 3), int))


def test_loss_builders_for_optax_loops():
  rng = np.random.default_rng(7)
  table = jnp.asarray(rng.normal(size=(V, V)), jnp.float32)

  def logits_fn(p, ids):  # a bigram model: logits of the next token from the current one
    return p["w"][ids]

  params, ref_params = {"w": table}, {"w": table * 0.5}
  ids = rng.integers(0, V, size=(B, T))
  labels = np.where(np.arange(T)[None, :] < 2, -100, ids)
  batch = {"input_ids": ids, "labels": labels}
  np.testing.assert_allclose(losses.nll_loss(logits_fn)(params, batch),
                             _seq_nll(np.asarray(table)[ids], labels).sum() / _count(labels).sum(), rtol=1e-5)
  with_ref = losses.with_reference_logits(logits_fn, ref_params, batch)
  np.testing.assert_allclose(with_ref["ref_logits"], np.asarray(table)[ids] * 0.5, rtol=1e-6)
  np.testing.assert_allclose(losses.kl_loss(logits_fn)(params, with_ref),
                             losses.kl_to_reference(np.asarray(table)[ids], np.asarray(table)[ids] * 0.5), rtol=1e-6)
