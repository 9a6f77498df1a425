"""Selective Synaptic Dampening (Foster, Schoepf & Brintrup, AAAI 2024)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn._src.base import Params, check_finite, check_positive, check_same_structure, is_concrete, needs_params


def _check_importance(params: Params, importance: Params, name: str) -> None:
  check_same_structure(params, importance, ref_name="params", other_name=name)
  check_finite(importance, name=name)
  if is_concrete(importance):
    for leaf in jax.tree_util.tree_leaves(importance):
      if np.any(np.asarray(leaf, dtype=np.float32) < 0):
        raise ValueError(f"{name} has negative values; importances (squared gradients) must be >= 0.")


def ssd_dampen(
    params: Params,
    forget_importance: Params,
    full_importance: Params,
    *,
    alpha: float,
    dampening: float,
) -> Params:
  r"""Dampens the parameters that matter far more to the forget set than to the whole data.

  For every scalar parameter :math:`\theta_j` with forget importance :math:`I_{f,j}` and
  full-data importance :math:`I_{D,j}` (e.g. both from ``fisher_diagonal``):

  .. math::
     \theta_j \leftarrow \begin{cases}
       \theta_j \cdot \min\!\big(\lambda I_{D,j} / I_{f,j},\ 1\big) & \text{if } I_{f,j} > \alpha\, I_{D,j} \\
       \theta_j & \text{otherwise,}
     \end{cases}

  with selection weighting :math:`\alpha` (``alpha``) and dampening constant :math:`\lambda`
  (``dampening``), as in Foster et al., "Fast Machine Unlearning Without Retraining Through
  Selective Synaptic Dampening", AAAI 2024 (Eq. 3-4; their code's defaults are alpha=10, lambda=1).
  The ratio is computed in float32; each leaf keeps its dtype.

  Args:
    params: parameter pytree.
    forget_importance: :math:`I_f`, shaped like ``params``, non-negative and finite.
    full_importance: :math:`I_D`, shaped like ``params``, non-negative and finite.
    alpha: selection weighting, > 0.
    dampening: dampening constant, > 0.

  Returns:
    The dampened parameters.

  Raises:
    ValueError: mismatched structures or shapes, non-finite or negative importances (checked on
      concrete values), ``alpha <= 0`` or ``dampening <= 0``.

  Warns:
    SSDWarning: ``alpha`` selects no parameter (called outside ``jit``): the parameters come back
      unchanged. ``ssd_selection`` gives the count and the largest ratio beforehand.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxunlearn
    >>> p = {"w": jnp.array([1.0, 1.0, 1.0])}
    >>> i_f = {"w": jnp.array([1.0, 20.0, 100.0])}
    >>> i_d = {"w": jnp.array([1.0, 1.0, 1.0])}
    >>> jaxunlearn.ssd_dampen(p, i_f, i_d, alpha=10.0, dampening=1.0)["w"]
    Array([1.  , 0.05, 0.01], dtype=float32)
  """
  check_positive(alpha, name="alpha")
  check_positive(dampening, name="dampening")
  _check_importance(params, forget_importance, "forget_importance")
  _check_importance(params, full_importance, "full_importance")

  out, selected, largest = _dampen(params, forget_importance, full_importance, jnp.float32(alpha),
                                   jnp.float32(dampening))
  if is_concrete(selected) and int(selected) == 0:  # under jit nothing can be said on the host
    warnings.warn(
        f"ssd_dampen: alpha={alpha} selects no parameter, the model is returned unchanged: the largest importance "
        f"ratio I_f / I_D is {float(largest):.3g}. With I_D computed over data that contain the forget set the ratio "
        "cannot exceed n / n_forget (about 10 when one class of ten is forgotten); choose alpha below the largest "
        "ratio (ssd_selection reports it).", SSDWarning, stacklevel=2)
  return out


class SSDWarning(UserWarning):
  """Selective Synaptic Dampening selected no parameter (its alpha is above every importance ratio)."""


def ssd_selection(forget_importance: Params, full_importance: Params, *, alpha: float) -> dict[str, float]:
  r"""What ``ssd_dampen`` with ``alpha`` would select: ``{"selected": how many scalar parameters
  have :math:`I_f > \alpha I_D`, "parameters": how many there are, "largest_ratio": the largest
  :math:`I_f / I_D` (over parameters with :math:`I_D > 0`; infinite if some :math:`I_f > 0 = I_D`)}``.
  Any alpha at or above ``largest_ratio`` selects nothing.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxunlearn
    >>> jaxunlearn.ssd_selection({"w": jnp.array([1.0, 20.0, 3.0])}, {"w": jnp.ones(3)}, alpha=5.0)
    {'selected': 1, 'parameters': 3, 'largest_ratio': 20.0}
  """
  check_positive(alpha, name="alpha")
  check_same_structure(forget_importance, full_importance, ref_name="forget_importance", other_name="full_importance")
  selected, largest = _selection(forget_importance, full_importance, jnp.float32(alpha))
  count = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(forget_importance))
  return {"selected": int(selected), "parameters": count, "largest_ratio": float(largest)}


def _leaf_selection(i_f, i_d, alpha):
  i_f, i_d = i_f.astype(jnp.float32), i_d.astype(jnp.float32)
  ratio = jnp.where(i_d > 0, i_f / jnp.where(i_d > 0, i_d, 1.0), jnp.where(i_f > 0, jnp.inf, 0.0))
  return i_f > alpha * i_d, jnp.max(ratio, initial=0.0)


def _totals(pairs):
  selected = sum(jnp.sum(sel, dtype=jnp.int32) for sel, _ in pairs)
  largest = jnp.max(jnp.stack([m for _, m in pairs])) if pairs else jnp.float32(0)
  return selected, largest


@jax.jit
def _selection(forget_importance, full_importance, alpha):
  pairs = [_leaf_selection(f, d, alpha) for f, d in zip(jax.tree_util.tree_leaves(forget_importance),
                                                          jax.tree_util.tree_leaves(full_importance))]
  return _totals(pairs)


@jax.jit
def _dampen(params, forget_importance, full_importance, alpha, dampening):
  # One compiled program for the whole tree (op-by-op dispatch cost ~4 ms on a small MLP); it also
  # counts the selected parameters and the largest ratio, for the warning.
  pairs = []

  def leaf(p, i_f, i_d):
    selected, largest = _leaf_selection(i_f, i_d, alpha)
    pairs.append((selected, largest))
    safe_f = jnp.where(i_f > 0, i_f.astype(jnp.float32), 1.0)
    beta = jnp.minimum(dampening * i_d.astype(jnp.float32) / safe_f, 1.0)
    scaled = (p.astype(jnp.float32) * beta).astype(p.dtype)
    return jnp.where(selected, scaled, p)

  out = jax.tree_util.tree_map(leaf, params, forget_importance, full_importance)
  return (out, *_totals(pairs))


# Stateless: optax's EmptyState (the public name is kept as an alias).
SSDState = optax.EmptyState


# The library's one default selection weighting (the transform's and the recipe's).
SSD_ALPHA = 5.0


def selective_synaptic_dampening(alpha: float = SSD_ALPHA, dampening: float = 1.0) -> optax.GradientTransformationExtraArgs:
  r"""Selective Synaptic Dampening as a gradient transformation.

  ``update(updates, state, params, *, forget_importance, full_importance)`` returns
  ``ssd_dampen(params + updates, ...) - params``, so ``optax.apply_updates(params, updates)``
  yields the dampened version of whatever the preceding transforms of a chain produced (with zero
  incoming updates, of ``params`` itself: SSD edits parameters, it does not transform gradients).
  Place it last in a chain, or use it alone with zero updates.

  Args:
    alpha: selection weighting :math:`\alpha` (> 0); see ``ssd_dampen``. The default, 5, is the
      library's one default for SSD (the paper's code uses 10; see ``recipes.ssd`` for why 10
      selects almost nothing when one class of ten is forgotten).
    dampening: dampening constant :math:`\lambda` (> 0).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import jaxunlearn
    >>> tx = jaxunlearn.selective_synaptic_dampening(alpha=10.0, dampening=1.0)
    >>> p = {"w": jnp.array([2.0, 2.0])}
    >>> zero = {"w": jnp.zeros(2)}
    >>> u, _ = tx.update(zero, tx.init(p), p, forget_importance={"w": jnp.array([64.0, 1.0])},
    ...                  full_importance={"w": jnp.array([1.0, 1.0])})
    >>> optax.apply_updates(p, u)["w"]  # 2 * min(1 / 64, 1) and 2 (not selected)
    Array([0.03125, 2.     ], dtype=float32)
  """
  check_positive(alpha, name="alpha")
  check_positive(dampening, name="dampening")

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, forget_importance, full_importance, **extra_args):
    del extra_args
    if params is None:
      raise needs_params("selective_synaptic_dampening")
    proposed = optax.apply_updates(params, updates)
    dampened = ssd_dampen(proposed, forget_importance, full_importance, alpha=alpha, dampening=dampening)
    return jax.tree_util.tree_map(lambda d, p: (d - p).astype(p.dtype), dampened, params), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
