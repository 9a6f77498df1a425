"""Gradient transforms that turn forget-set descent into ascent."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxunlearn._src.base import check_same_structure


# Stateless: optax's EmptyState (the public name is kept as an alias).
GradientAscentState = optax.EmptyState


def gradient_ascent() -> optax.GradientTransformationExtraArgs:
  r"""Negates the incoming gradients, so descent on the forget loss becomes ascent.

  .. math:: u_t = -g_t, \quad g_t = \nabla_\theta \mathcal{L}_{\text{forget}}(\theta_t)

  Chain it before any optimizer: ``optax.chain(gradient_ascent(), optax.adam(1e-4))`` maximises
  the forget-set loss with Adam (Golatkar et al., CVPR 2020 call this baseline "NegGrad";
  Thudi et al., EuroS&P 2022, analyse it as unlearning by gradient ascent).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (unknown extra arguments are ignored).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import jaxunlearn
    >>> tx = optax.chain(jaxunlearn.gradient_ascent(), optax.sgd(0.1))
    >>> params = {"w": jnp.array([1.0])}
    >>> updates, _ = tx.update({"w": jnp.array([2.0])}, tx.init(params), params)
    >>> updates["w"]  # sgd returns -lr * (-g) = +0.2: a step up the forget loss
    Array([0.2], dtype=float32)
  """

  def init_fn(params: Any) -> optax.EmptyState:
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    return jax.tree_util.tree_map(lambda g: -g, updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


GradientDifferenceState = optax.EmptyState


def gradient_difference(
    forget_weight: float = 1.0, retain_weight: float = 1.0
) -> optax.GradientTransformationExtraArgs:
  r"""Combines forget-set and retain-set gradients into one descent direction.

  .. math:: u_t = w_r\, \nabla_\theta \mathcal{L}_{\text{retain}} - w_f\, \nabla_\theta \mathcal{L}_{\text{forget}}

  Descending along ``u_t`` lowers the retain loss while raising the forget loss ("GradDiff",
  Liu et al., CoLLAs 2022; Maini et al., TOFU, 2024). The incoming ``updates`` are the forget
  gradients; the retain gradients arrive as the required keyword ``retain_grads``.

  Args:
    forget_weight: ``w_f``, weight of the (ascended) forget gradient.
    retain_weight: ``w_r``, weight of the (descended) retain gradient.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update(forget_grads, state, params=None,
    *, retain_grads)`` returns ``retain_weight * retain_grads - forget_weight * forget_grads``.

  Raises:
    ValueError: (at update) ``retain_grads`` not shaped like the forget gradients.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import jaxunlearn
    >>> tx = optax.chain(jaxunlearn.gradient_difference(forget_weight=0.5), optax.sgd(1.0))
    >>> p = {"w": jnp.zeros(2)}
    >>> u, _ = tx.update({"w": jnp.array([2.0, 0.0])}, tx.init(p), p,
    ...                  retain_grads={"w": jnp.array([0.0, 1.0])})
    >>> u["w"]  # -(1.0 * retain - 0.5 * forget)
    Array([ 1., -1.], dtype=float32)
  """

  def init_fn(params: Any) -> GradientDifferenceState:
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, retain_grads, **extra_args):
    del params, extra_args
    check_same_structure(updates, retain_grads, ref_name="forget gradients", other_name="retain_grads")
    combined = jax.tree_util.tree_map(
        lambda f, r: (jnp.asarray(retain_weight, f.dtype) * r.astype(f.dtype)
                      - jnp.asarray(forget_weight, f.dtype) * f),
        updates,
        retain_grads,
    )
    return combined, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
