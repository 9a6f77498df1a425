"""Gaussian calibration (closed forms) and the noise transform."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxunlearn as ju


def _delta_of_sigma(sigma, eps, sens):
  from scipy.stats import norm

  a = sens / (2 * sigma)
  b = eps * sigma / sens
  return norm.cdf(a - b) - np.exp(eps) * norm.cdf(-a - b)


def test_gaussian_sigma_classical_closed_form():
  for eps, delta, sens in [(0.5, 1e-5, 1.0), (0.9, 1e-3, 2.5), (0.1, 1e-6, 0.3)]:
    assert ju.gaussian_sigma(eps, delta, sens, analytic=False) == pytest.approx(sens * np.sqrt(2 * np.log(1.25 / delta)) / eps, rel=1e-12)


@pytest.mark.parametrize("eps,delta,sens", [(0.5, 1e-5, 1.0), (1.0, 1e-5, 1.0), (4.0, 1e-6, 2.0), (20.0, 1e-3, 0.5)])
def test_gaussian_sigma_analytic_is_the_smallest_valid_sigma(eps, delta, sens):
  sigma = ju.gaussian_sigma(eps, delta, sens)
  assert _delta_of_sigma(sigma, eps, sens) <= delta * (1 + 1e-9)
  assert _delta_of_sigma(sigma * (1 - 1e-6), eps, sens) > delta
  if eps < 1:
    assert sigma < ju.gaussian_sigma(eps, delta, sens, analytic=False)


def test_gaussian_sigma_errors():
  with pytest.raises(ValueError, match="valid only for epsilon < 1"):
    ju.gaussian_sigma(1.0, 1e-5, 1.0, analytic=False)
  with pytest.raises(ValueError, match="epsilon must be"):
    ju.gaussian_sigma(0.0, 1e-5, 1.0)
  with pytest.raises(ValueError, match=r"delta must be in \(0, 1\)"):
    ju.gaussian_sigma(1.0, 1.0, 1.0)
  with pytest.raises(ValueError, match=r"delta must be in \(0, 1\)"):
    ju.gaussian_sigma(1.0, 0.0, 1.0)
  with pytest.raises(ValueError, match="sensitivity must be"):
    ju.gaussian_sigma(1.0, 1e-5, -2.0)


def test_gaussian_noise_statistics_and_fresh_keys():
  sigma = 0.3
  tx = ju.gaussian_noise(sigma, key=jax.random.key(11))
  zeros = {"a": jnp.zeros((400, 500)), "b": jnp.zeros(1000, jnp.bfloat16)}
  state = tx.init(zeros)
  step = jax.jit(tx.update)
  u1, state = step(zeros, state)
  u2, state = step(zeros, state)
  a1 = np.asarray(u1["a"], np.float64)
  # 200,000 draws: the sample std is within 1% of sigma with overwhelming probability (SE ~0.16%).
  assert abs(a1.std() - sigma) / sigma < 0.01
  assert abs(a1.mean()) < 5 * sigma / np.sqrt(a1.size)
  assert not np.allclose(u1["a"], u2["a"])
  assert u1["b"].dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="sigma must be >= 0"):
    ju.gaussian_noise(-1.0, key=jax.random.key(0))




def test_add_gaussian_noise_is_the_transform_in_one_call():
  params = {"w": jnp.ones((50, 40), jnp.bfloat16), "b": jnp.zeros(7)}
  key = jax.random.key(11)
  tx = ju.gaussian_noise(0.3, key=key)
  sub = jax.random.split(key)[1]  # the transform splits its key before drawing
  u, _ = tx.update(params, tx.init(params))
  one = ju.add_gaussian_noise(params, 0.3, key=sub)
  for a, b in zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(one)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
  with pytest.raises(ValueError, match="sigma must be >= 0"):
    ju.add_gaussian_noise(params, -1.0, key=key)
