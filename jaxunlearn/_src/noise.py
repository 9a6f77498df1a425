"""Calibrated Gaussian noise: (epsilon, delta) calibration and a noise-adding transform."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from scipy import special

from jaxunlearn._src.base import PRNGKey


def _check_privacy_args(epsilon: float, delta: float, sensitivity: float) -> None:
  for value, name in ((epsilon, "epsilon"), (sensitivity, "sensitivity")):
    if not (math.isfinite(value) and value > 0):
      raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
  if not (0.0 < delta < 1.0):
    raise ValueError(f"delta must be in (0, 1), got {delta!r}.")


def _analytic_delta(s: float, epsilon: float) -> float:
  """delta(s) of the Gaussian mechanism with noise scale s = sigma / sensitivity (Balle & Wang, Thm. 8)."""
  a = 1.0 / (2.0 * s) - epsilon * s
  b = -1.0 / (2.0 * s) - epsilon * s
  return float(special.ndtr(a) - math.exp(epsilon + special.log_ndtr(b)))


def gaussian_sigma(epsilon: float, delta: float, sensitivity: float, *, analytic: bool = True) -> float:
  r"""Standard deviation of Gaussian noise giving an (epsilon, delta) guarantee.

  For a quantity with L2 sensitivity :math:`\Delta`, adding :math:`\mathcal N(0, \sigma^2 I)` is
  (:math:`\varepsilon, \delta`)-differentially private when

  * ``analytic=False`` (classical Gaussian mechanism, Dwork & Roth 2014, Thm. A.1, valid only for
    :math:`\varepsilon < 1`): :math:`\sigma = \Delta\sqrt{2\ln(1.25/\delta)}/\varepsilon`;
  * ``analytic=True`` (analytic Gaussian mechanism, Balle & Wang, ICML 2018, Thm. 8, valid for
    every :math:`\varepsilon > 0` and never larger than the classical value): the smallest
    :math:`\sigma` with

    .. math:: \Phi\Big(\frac{\Delta}{2\sigma} - \frac{\varepsilon\sigma}{\Delta}\Big)
              - e^{\varepsilon}\,\Phi\Big(-\frac{\Delta}{2\sigma} - \frac{\varepsilon\sigma}{\Delta}\Big) \le \delta,

    found by bisection to a relative precision of 1e-12 (the returned value satisfies the
    inequality).

  Args:
    epsilon: privacy parameter :math:`\varepsilon > 0` (< 1 when ``analytic=False``).
    delta: privacy parameter in (0, 1).
    sensitivity: L2 sensitivity :math:`\Delta > 0`.
    analytic: use the analytic calibration (default) or the classical formula.

  Returns:
    :math:`\sigma` as a Python float.

  Raises:
    ValueError: ``epsilon <= 0``, ``delta`` outside (0, 1), ``sensitivity <= 0``, or
      ``epsilon >= 1`` with ``analytic=False``.

  Example:
    >>> import jaxunlearn
    >>> round(jaxunlearn.gaussian_sigma(0.5, 1e-5, 1.0, analytic=False), 4)
    9.6896
    >>> jaxunlearn.gaussian_sigma(0.5, 1e-5, 1.0) < 9.6896
    True
  """
  epsilon, delta, sensitivity = float(epsilon), float(delta), float(sensitivity)
  _check_privacy_args(epsilon, delta, sensitivity)
  if not analytic:
    if epsilon >= 1.0:
      raise ValueError(
          f"the classical Gaussian mechanism is valid only for epsilon < 1, got epsilon={epsilon}; "
          "use analytic=True, which holds for every epsilon > 0."
      )
    return sensitivity * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon
  # delta(s) decreases from 1 (s -> 0) to 0 (s -> inf); bisect on log s.
  lo, hi = 1e-8, 1.0
  while _analytic_delta(hi, epsilon) > delta:
    lo, hi = hi, hi * 2.0
    if hi > 1e12:
      raise ValueError(f"no noise scale reaches delta={delta} for epsilon={epsilon}.")
  for _ in range(200):
    mid = math.sqrt(lo * hi)
    if _analytic_delta(mid, epsilon) > delta:
      lo = mid
    else:
      hi = mid
    if hi / lo - 1.0 < 1e-12:
      break
  return hi * sensitivity


class GaussianNoiseState(NamedTuple):
  """State holding the PRNG key, split at every update."""

  key: PRNGKey


def add_gaussian_noise(tree, sigma: float, *, key: PRNGKey):
  r"""``tree`` plus independent :math:`\mathcal N(0, \sigma^2)` noise on every entry: the one-shot
  form of ``gaussian_noise`` (noisy weights in one call: ``add_gaussian_noise(params, sigma,
  key=k)``). Drawn in float32 with ``optax.tree.random_like`` (each leaf's sharding is kept),
  added in float32; each leaf keeps its dtype.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxunlearn import add_gaussian_noise
    >>> noisy = add_gaussian_noise({"w": jnp.ones(10000)}, 0.1, key=jax.random.key(0))
    >>> bool(abs(float(jnp.std(noisy["w"])) - 0.1) < 0.005), bool(abs(float(jnp.mean(noisy["w"])) - 1) < 0.005)
    (True, True)
  """
  if not isinstance(sigma, jax.core.Tracer) and not float(sigma) >= 0:
    raise ValueError(f"sigma must be >= 0, got {sigma!r}.")
  noise = optax.tree.random_like(key, tree, jax.random.normal, dtype=jnp.float32)
  return jax.tree_util.tree_map(
      lambda u, z: (u.astype(jnp.float32) + jnp.asarray(sigma, jnp.float32) * z).astype(u.dtype), tree, noise)


def gaussian_noise(sigma: float, *, key: PRNGKey) -> optax.GradientTransformationExtraArgs:
  r"""Adds independent :math:`\mathcal N(0, \sigma^2)` noise to every update entry.

  .. math:: u_t = g_t + \sigma\,\xi_t, \qquad \xi_t \sim \mathcal N(0, I)

  The key lives in the state and is split at every call, so successive updates get fresh noise.
  Noise is drawn in float32 with ``optax.tree.random_like`` (it keeps each leaf's sharding) and
  added in float32; each leaf keeps its dtype. Calibrate ``sigma`` with ``gaussian_sigma``; use
  it on parameters (``optax.apply_updates(params, tx.update(zeros, ...))``) for noisy weights,
  or in a chain for noisy gradients.

  Args:
    sigma: noise standard deviation, >= 0.
    key: PRNG key (required: there is no default seed).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxunlearn
    >>> tx = jaxunlearn.gaussian_noise(0.1, key=jax.random.key(0))
    >>> u, state = tx.update({"w": jnp.zeros(10000)}, tx.init(None))
    >>> bool(abs(float(jnp.std(u["w"])) - 0.1) < 0.005)
    True
  """
  if not isinstance(sigma, jax.core.Tracer) and not float(sigma) >= 0:
    raise ValueError(f"sigma must be >= 0, got {sigma!r}.")

  def init_fn(params):
    del params
    return GaussianNoiseState(key=key)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    new_key, sub = jax.random.split(state.key)
    return add_gaussian_noise(updates, sigma, key=sub), GaussianNoiseState(key=new_key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)

