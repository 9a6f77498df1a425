"""Parameter surgery: re-initialise selected layers, or prune the smallest weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn._src.base import Mask, Params, PRNGKey, check_same_structure, resolve_mask, needs_params


def reset_params(params: Params, fresh: Params, mask: Mask) -> Params:
  """Takes the masked leaves from ``fresh`` and the others from ``params``.

  Args:
    params: current parameters.
    fresh: freshly initialised parameters, same structure and shapes.
    mask: a bool pytree shaped like ``params``, a predicate on the parameter path
      (``"hidden/1/kernel"``), or a regex searched in that path.

  Returns:
    The parameters with the masked leaves replaced (cast to each leaf's dtype).

  Raises:
    ValueError: ``fresh`` not shaped like ``params``, or a mask that matches nothing.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxunlearn
    >>> p = {"body": jnp.ones(2), "head": jnp.ones(2)}
    >>> jaxunlearn.reset_params(p, {"body": jnp.zeros(2), "head": jnp.zeros(2)}, "head")["head"]
    Array([0., 0.], dtype=float32)
  """
  check_same_structure(params, fresh, ref_name="params", other_name="fresh")
  resolved = resolve_mask(mask, params)
  return jax.tree_util.tree_map(
      lambda m, p, f: jnp.asarray(f, dtype=jnp.asarray(p).dtype) if m else p, resolved, params, fresh
  )


class LayerResetState(NamedTuple):
  """State holding the PRNG key that draws each re-initialisation."""

  key: PRNGKey


def layer_reset(
    mask: Mask, init_fn: Callable[[PRNGKey], Params], *, key: PRNGKey
) -> optax.GradientTransformationExtraArgs:
  r"""Re-initialises the masked parameters at every update; passes the other updates through.

  On masked leaves the update is :math:`\theta^{\text{fresh}} - \theta` with
  :math:`\theta^{\text{fresh}} = \text{init\_fn}(k_t)` and :math:`k_t` split from the state's key,
  so ``optax.apply_updates`` lands on the fresh values; on unmasked leaves the incoming updates
  are returned unchanged, so the transform can close a chain. The usual "reset, then repair"
  recipe applies it once, then fine-tunes on the retain set; ``reset_params`` is the pure form.

  Args:
    mask: which leaves to reset: a bool pytree, a path predicate, or a regex (see
      ``reset_params``). It is resolved against ``params`` and must match at least one leaf.
    init_fn: ``init_fn(key) -> params`` returning freshly initialised parameters of the same
      structure (``jaxunlearn.models.init_fn`` builds one for the reference models).
    key: PRNG key (required).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` that needs ``params`` at update.
  """

  def init(params):
    if params is not None:
      resolve_mask(mask, params)  # fail early when the mask selects nothing
    return LayerResetState(key=key)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise needs_params("layer_reset")
    new_key, sub = jax.random.split(state.key)
    fresh = init_fn(sub)
    check_same_structure(params, fresh, ref_name="params", other_name="init_fn(key)")
    resolved = resolve_mask(mask, params)
    out = jax.tree_util.tree_map(
        lambda m, u, p, f: (f.astype(p.dtype) - p) if m else u, resolved, updates, params, fresh
    )
    return out, LayerResetState(key=new_key)

  return optax.GradientTransformationExtraArgs(init, update_fn)


def prune_smallest(params: Params, fraction: float, mask: Mask | None = None) -> Params:
  r"""Zeroes the ``fraction`` of masked weights with the smallest magnitude (global pruning).

  Let :math:`W` be all scalar entries of the masked leaves, :math:`k = \lfloor \text{fraction}
  \cdot |W| \rfloor`. The :math:`k` entries of smallest :math:`|w|` (ties broken by position) are
  set to zero; unmasked leaves are untouched. This is the pruning step of "prune, then fine-tune
  on the retain set" (Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023).

  Args:
    params: parameter pytree.
    fraction: share of masked entries to zero, in [0, 1).
    mask: leaves to prune (bool pytree, path predicate or regex); all leaves when None.

  Returns:
    The pruned parameters (dtypes kept).

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxunlearn
    >>> jaxunlearn.prune_smallest({"w": jnp.array([0.1, -3.0, 0.2, 4.0])}, 0.5)["w"]
    Array([ 0., -3.,  0.,  4.], dtype=float32)
  """
  if not (isinstance(fraction, (int, float, np.floating)) and 0.0 <= float(fraction) < 1.0):
    raise ValueError(f"fraction must be in [0, 1), got {fraction!r}.")
  resolved = resolve_mask(mask if mask is not None else (lambda _: True), params)
  leaves, treedef = jax.tree_util.tree_flatten(params)
  selected = [i for i, m in enumerate(jax.tree_util.tree_leaves(resolved)) if m]
  sizes = [int(np.size(leaves[i])) for i in selected]
  k = int(np.floor(float(fraction) * sum(sizes)))
  if k == 0:
    return params
  pruned = global_rank([jnp.abs(leaves[i]) for i in selected], k, largest=False)
  new_leaves = list(leaves)
  for i, drop in zip(selected, pruned):
    new_leaves[i] = jnp.where(drop, jnp.zeros((), leaves[i].dtype), leaves[i])
  return jax.tree_util.tree_unflatten(treedef, new_leaves)


def global_rank(values: list[jax.Array], k: int, *, largest: bool) -> list[jax.Array]:
  """Boolean arrays shaped like ``values``: True on the ``k`` entries of largest (or smallest)
  value ranked over all of them together, ties broken by position (leaf order, then row-major)."""
  flat = jnp.concatenate([jnp.asarray(v).astype(jnp.float32).reshape(-1) for v in values])
  order = jnp.argsort(-flat if largest else flat, stable=True)
  chosen = jnp.zeros(flat.shape, bool).at[order[:k]].set(True)
  offsets = np.cumsum([0] + [int(np.size(v)) for v in values])
  return [chosen[a:b].reshape(jnp.shape(v)) for a, b, v in zip(offsets[:-1], offsets[1:], values)]
