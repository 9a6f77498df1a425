"""Placing a language model's parameters and batches on a device mesh (FSDP-style).

``fsdp_shardings(params, mesh)`` splits every parameter with a dimension divisible by the ``fsdp``
axis over it (the largest such dimension), and replicates the rest (norm scales, small vectors);
``batch_sharding(mesh)`` splits batches over ``data`` (and ``fsdp``, as FSDP does). The recipes of
``jaxunlearn.lm.recipes`` then run unchanged: their jitted steps follow the inputs' shardings, and
the optimizer state, created from the sharded parameters, is sharded alike. The mesh's axes must
have ``AxisType.Auto`` (the compiler partitions the model); explicit axes are refused by name.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxunlearn._src.base import path_str


def _axis(mesh: Mesh, name: str) -> int:
  return dict(zip(mesh.axis_names, mesh.axis_sizes)).get(name, 1)


def fsdp_shardings(params: Any, mesh: Mesh, *, axis: str = "fsdp", min_size: int = 1024) -> Any:
  """A ``NamedSharding`` per parameter: the largest dimension divisible by the mesh's ``axis``
  size is split over it, for parameters of at least ``min_size`` elements; others are replicated.

  Example:
    >>> import jax
    >>> from jaxunlearn.lm import models, sharding
    >>> mesh = jax.make_mesh((1,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
    >>> lm = models.create(models.DecoderConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64))
    >>> head = sharding.fsdp_shardings(lm.params, mesh)["head"]
    >>> tuple(head["kernel"].spec)  # [d_model, vocab]: the larger dimension is split
    (None, 'fsdp')
  """
  if axis not in mesh.axis_names:
    raise ValueError(f"the mesh has no {axis!r} axis (axes: {mesh.axis_names}).")
  _check_auto(mesh)
  n = _axis(mesh, axis)

  def one(x):
    shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
    spec = [None] * len(shape)
    if int(np.prod(shape, dtype=np.int64)) >= min_size:
      candidates = [d for d in range(len(shape)) if shape[d] % n == 0]
      if candidates:
        spec[max(candidates, key=lambda d: (shape[d], d))] = axis
    return NamedSharding(mesh, PartitionSpec(*spec))

  return jax.tree.map(one, params)


def _check_auto(mesh: Mesh) -> None:
  explicit = [a for a, t in zip(mesh.axis_names, mesh.axis_types) if t == jax.sharding.AxisType.Explicit]
  if explicit:
    raise ValueError(
        f"mesh axes {explicit} have explicit axis types (jax.make_mesh's default): the FSDP placement lets the "
        "compiler partition the model (its reshapes and gathers carry no sharding annotations), which needs "
        "Auto axes: jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,) * len(names)).")


def shard_params(params: Any, mesh: Mesh, *, axis: str = "fsdp", min_size: int = 1024) -> Any:
  """``params`` placed by ``fsdp_shardings``."""
  return jax.device_put(params, fsdp_shardings(params, mesh, axis=axis, min_size=min_size))


def batch_sharding(mesh: Mesh, *, axes: tuple[str, ...] = ("data", "fsdp")) -> NamedSharding:
  """Batches split on their leading (example) axis over the mesh axes among ``axes`` it has."""
  _check_auto(mesh)
  present = tuple(a for a in axes if a in mesh.axis_names)
  if not present:
    raise ValueError(f"the mesh has none of the axes {axes} (axes: {mesh.axis_names}).")
  return NamedSharding(mesh, PartitionSpec(present if len(present) > 1 else present[0]))


def save_params(path: str, params: Any) -> None:
  """Saves (sharded) parameters as an orbax checkpoint at ``path``, which must not exist.

  In several processes every process makes the call and writes the shards its devices hold
  (arrays placed by :func:`shard_params` over all processes' devices); the directory appears
  complete or not at all (orbax's commit). :func:`restore_params` reads it back on any mesh, in
  any number of processes.

  Args:
    path: a new directory (a shared filesystem when several processes write it).
    params: the parameter pytree (global ``jax.Array``s, or host arrays in one process).
  """
  import orbax.checkpoint as ocp

  path = os.path.abspath(path)
  if os.path.exists(path):
    raise FileExistsError(f"{path} already exists: save_params never overwrites a checkpoint.")
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(path, params)
  ckpt.wait_until_finished()
  ckpt.close()


def _check_template(path: str, stored: Any, template: Any) -> None:
  def leaves(tree):
    return {path_str(p): (tuple(x.shape), np.dtype(x.dtype)) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}

  have, want = leaves(stored), leaves(template)
  problems = [f"{k}: missing from the checkpoint" for k in want if k not in have]
  problems += [f"{k}: in the checkpoint, not in the template" for k in have if k not in want]
  problems += [f"{k}: checkpoint {have[k][1]}{list(have[k][0])}, template {want[k][1]}{list(want[k][0])}"
               for k in want if k in have and have[k] != want[k]]
  if problems:
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    raise ValueError(f"{path} does not hold parameters shaped like the template: {shown}.")


def restore_params(path: str, mesh: Mesh, *, template: Any = None, axis: str = "fsdp", min_size: int = 1024) -> Any:
  """Parameters saved by :func:`save_params` (or any orbax checkpoint of arrays), read straight
  into their ``fsdp_shardings`` on ``mesh``: each process reads only the pieces its devices hold,
  whatever the mesh and process count the checkpoint was written with.

  Args:
    path: the checkpoint directory.
    mesh: where the parameters go (``AxisType.Auto`` axes, one named ``axis``).
    template: a pytree like the parameters (arrays or ``jax.ShapeDtypeStruct``s, e.g. a freshly
      built model's ``params``) whose structure the result takes (orbax stores dict keys as
      strings: without a template, a list or an integer-keyed dict comes back string-keyed).
    axis: the mesh axis parameters are split over.
    min_size: parameters smaller than this are replicated (as in :func:`fsdp_shardings`).

  Returns:
    The parameter pytree of global arrays placed on ``mesh``.

  Example:
    >>> import tempfile, jax, numpy as np
    >>> from jaxunlearn.lm import models, sharding
    >>> mesh = jax.make_mesh((1,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
    >>> lm = models.create(models.DecoderConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64))
    >>> path = tempfile.mkdtemp() + "/params"
    >>> sharding.save_params(path, sharding.shard_params(lm.params, mesh))
    >>> back = sharding.restore_params(path, mesh, template=lm.params)
    >>> same = jax.tree.map(np.array_equal, back, lm.params)
    >>> all(jax.tree.leaves(same))
    True
  """
  import orbax.checkpoint as ocp

  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path} is not a checkpoint directory.")
  ckpt = ocp.StandardCheckpointer()
  try:
    meta = ckpt.metadata(path)
    stored = getattr(meta, "item_metadata", meta)
    stored = getattr(stored, "tree", stored)
    if template is None:
      template = stored
    else:
      _check_template(path, stored, template)  # before orbax reads: a failed restore leaves I/O behind
    shapes = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), template)
    shardings = fsdp_shardings(shapes, mesh, axis=axis, min_size=min_size)
    target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
    return ckpt.restore(path, target)
  finally:
    ckpt.close()
