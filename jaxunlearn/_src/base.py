"""Shared types and input checks used across jaxunlearn."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Union

import jax
import numpy as np

Params = Any  # a pytree of arrays
PRNGKey = jax.Array
Batch = Mapping[str, jax.Array]  # {"x": inputs, "y": int labels, optional "mask": 0/1 weights, "ids"}
ApplyFn = Callable[[Params, jax.Array], jax.Array]  # apply(params, x) -> logits
LossFn = Callable[[Params, Batch], jax.Array]  # loss(params, batch) -> scalar mean loss

# A mask selects parameter leaves: a pytree of bools shaped like the params, a predicate on the
# parameter path ("layers/0/kernel"), or a regular expression searched in that path.
Mask = Union[Any, Callable[[str], bool], str]


def path_str(path: tuple) -> str:
  """Slash-joined readable form of a pytree key path, e.g. ``"linear1/kernel"``."""
  parts = []
  if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
    path = path[:-1]  # Flax NNX variables hold their array in ``.value``
  for entry in path:
    if isinstance(entry, jax.tree_util.DictKey):
      parts.append(str(entry.key))
    elif isinstance(entry, jax.tree_util.GetAttrKey):
      parts.append(str(entry.name))
    elif isinstance(entry, jax.tree_util.SequenceKey):
      parts.append(str(entry.idx))
    elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
      parts.append(str(entry.key))
    else:
      parts.append(str(entry).strip(".[]'\""))
  return "/".join(parts)


def varying_axes(aval: Any) -> frozenset:
  """The ``shard_map``/``pmap`` axes over which a value of type ``aval`` varies (empty outside)."""
  vma = getattr(aval, "vma", None)  # jax < 0.9 named them ``vma``
  if vma is None:
    vma = getattr(getattr(aval, "manual_axis_type", None), "varying", None)
  return frozenset(vma or ())


def vary(x: jax.Array, axes) -> jax.Array:
  """``x`` marked as varying over ``axes`` inside ``shard_map``/``pmap`` (a no-op elsewhere).

  A replicated (unvarying) value differentiated against a varying loss gets its gradient summed
  over the devices (the transpose of the implicit broadcast is a ``psum``): per-example gradients
  of replicated parameters would mix the examples of every device. Marked varying, each device
  differentiates its own examples only, and sums are reduced explicitly afterwards.
  """
  missing = tuple(a for a in axes if a not in varying_axes(jax.typeof(x)))
  return jax.lax.pcast(x, missing, to="varying") if missing else x


def needs_params(name: str) -> ValueError:
  """The error of a transform that edits parameters and was called without them."""
  return ValueError(f"{name} needs params: call update(updates, state, params, ...) (it edits parameters, so "
                    "optax must pass them).")


def check_same_structure(reference: Any, other: Any, *, ref_name: str, other_name: str) -> None:
  """Raises ``ValueError`` unless ``other`` has the pytree structure and leaf shapes of ``reference``."""
  ref_def = jax.tree_util.tree_structure(reference)
  other_def = jax.tree_util.tree_structure(other)
  if ref_def != other_def:
    raise ValueError(
        f"{other_name} must have the same pytree structure as {ref_name}; "
        f"got {other_def} for {other_name} and {ref_def} for {ref_name}."
    )
  ref_leaves = jax.tree_util.tree_leaves_with_path(reference)
  other_leaves = jax.tree_util.tree_leaves(other)
  for (path, a), b in zip(ref_leaves, other_leaves):
    if np.shape(a) != np.shape(b):
      raise ValueError(
          f"{other_name} leaf {path_str(path)!r} has shape {np.shape(b)}, "
          f"but {ref_name} has shape {np.shape(a)} there."
      )


def is_concrete(tree: Any) -> bool:
  """True when no leaf of ``tree`` is a tracer (values can be inspected on the host)."""
  return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def check_finite(tree: Any, *, name: str, hint: str = "") -> None:
  """Raises ``ValueError`` naming the first leaf of ``tree`` with a NaN or infinity.

  Only concrete values are checked; under ``jit`` the check is skipped (no host callback is made).
  """
  if not is_concrete(tree):
    return
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    # NumPy, not jnp: inside a trace even a concrete constant's jnp result would be staged out.
    if not np.all(np.isfinite(np.asarray(leaf, dtype=np.float32))):
      raise ValueError(f"{name} has non-finite values (NaN or inf) in leaf {path_str(path)!r}"
                       + (f": {hint}." if hint else "."))


def check_positive(value: Any, *, name: str) -> None:
  """Raises ``ValueError`` when a concrete scalar hyper-parameter is not > 0."""
  if isinstance(value, jax.core.Tracer):
    return
  if not np.all(np.asarray(value) > 0):
    raise ValueError(f"{name} must be > 0, got {value!r}.")


def path_mask(pattern: str, *, whole_segments: bool = True) -> Callable[[str], bool]:
  """A mask predicate matching the regular expression ``pattern`` against parameter paths.

  With ``whole_segments`` (the default) the pattern must match one or more whole ``/``-separated
  segments: ``path_mask("out")`` selects ``out/kernel`` and ``head/out/bias`` but not
  ``dropout/rate`` or ``output/kernel``; ``path_mask("layers/[01]")`` selects the first two
  layers. Without it, the pattern may match anywhere (what a plain string mask does).

  Example:
    >>> from jaxunlearn import path_mask
    >>> select = path_mask("out")
    >>> select("out/kernel"), select("dropout/rate"), select("blocks/out/bias")
    (True, False, True)
  """
  compiled = re.compile(rf"(?:^|/)(?:{pattern})(?:/|$)" if whole_segments else pattern)
  return lambda path: compiled.search(path) is not None


def resolve_mask(mask: Mask, params: Params) -> Any:
  """Turns a mask (bool pytree, path predicate, or regex) into a pytree of Python bools.

  Args:
    mask: a pytree of bools with the structure of ``params``; or a callable taking the
      slash-joined parameter path (``"layers/0/kernel"``) and returning a bool; or a regular
      expression string, matched with ``re.search`` *anywhere* in that path (``"out"`` also
      selects ``dropout/...``; use ``path_mask("out")`` to match whole path segments only).
    params: the parameter pytree the mask applies to.

  Returns:
    A pytree of bools with the structure of ``params``.

  Raises:
    ValueError: if the mask tree does not match ``params`` or the mask selects no leaf.
  """
  if isinstance(mask, str):
    pattern = re.compile(mask)
    predicate: Callable[[str], bool] | None = lambda p: pattern.search(p) is not None
  elif callable(mask) and not isinstance(mask, Mapping):
    predicate = mask
  else:
    predicate = None
  if predicate is not None:
    resolved = jax.tree_util.tree_map_with_path(lambda path, _: bool(predicate(path_str(path))), params)
  else:
    if jax.tree_util.tree_structure(mask) != jax.tree_util.tree_structure(params):
      raise ValueError(
          "mask must be a pytree of bools with the same structure as params, a predicate on the "
          f"parameter path, or a regex; got structure {jax.tree_util.tree_structure(mask)} for "
          f"params of structure {jax.tree_util.tree_structure(params)}."
      )
    resolved = jax.tree_util.tree_map(bool, mask)
  if not any(jax.tree_util.tree_leaves(resolved)):
    paths = [path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    raise ValueError(f"mask {mask!r} matches no parameter; parameter paths are {paths}.")
  return resolved


def example_count(tree: Any, *, name: str) -> int:
  """The common leading (example) axis size of every array in ``tree``; a clear error otherwise."""
  leaves = jax.tree_util.tree_leaves(tree)
  if not leaves:
    raise ValueError(f"{name} must be a pytree with at least one array.")
  sizes = {int(np.shape(x)[0]) if np.ndim(x) else -1 for x in leaves}
  if len(sizes) != 1 or -1 in sizes:
    raise ValueError(
        f"every array in {name} needs the same leading example axis; got leading sizes {sorted(sizes)}."
    )
  return sizes.pop()
