"""Per-parameter importance: the diagonal of the empirical Fisher information."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxunlearn._src import fastfisher
from jaxunlearn._src.data import Dataset
from jaxunlearn._src.microbatch import batch_grad, check_micro_batch
from jaxunlearn._src.base import LossFn, Params, check_finite, example_count, vary


def _zeros_f32(params: Params) -> Params:
  return jax.tree_util.tree_map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)


def _add_sq(acc: Params, grads: Params, axis: int | None) -> Params:
  """acc + sum of squared grads (over ``axis`` when grads carry an example axis)."""

  def leaf(a, g):
    g2 = jnp.square(g.astype(jnp.float32))
    return a + (jnp.sum(g2, axis=axis) if axis is not None else g2)

  return jax.tree_util.tree_map(leaf, acc, grads)


def _axes(axis_name) -> tuple[str, ...]:
  return tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)


def _explicit_example_axes(data) -> tuple[Any, tuple[str, ...]] | None:
  """``(mesh, axes)`` when a data leaf's example axis is sharded over mesh axes of explicit type."""
  for x in jax.tree_util.tree_leaves(data):
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec, mesh = getattr(sharding, "spec", None), getattr(sharding, "mesh", None)
    if spec is None or mesh is None or not len(spec) or spec[0] is None:
      continue
    axes = _axes(spec[0])
    types = dict(zip(mesh.axis_names, mesh.axis_types))
    if all(types.get(a) == jax.sharding.AxisType.Explicit for a in axes):
      return mesh, axes
  return None


def _replicated(x: jax.Array) -> jax.Array:
  """``x`` gathered onto every device when it is sharded with explicit axis types."""
  sharding = getattr(jax.typeof(x), "sharding", None)
  spec = getattr(sharding, "spec", None)
  if spec is not None and any(s is not None for s in spec) and getattr(sharding, "mesh", None) is not None:
    return jax.sharding.reshard(x, NamedSharding(sharding.mesh, PartitionSpec()))
  return x


@functools.partial(jax.jit, static_argnames=("loss_fn", "batch_size", "per_example", "axis_name", "unroll", "method", "micro_batch",
                                             "progress"))
def _fisher(loss_fn, params, data, *, batch_size, per_example, axis_name, unroll, method="decompose", micro_batch=None,
            progress=None):
  local = functools.partial(_local_fisher, loss_fn, batch_size=batch_size, per_example=per_example, unroll=unroll,
                            method=method, micro_batch=micro_batch, progress=progress)
  explicit = _explicit_example_axes(data) if axis_name is None else None
  if explicit is not None:
    # The example axis is sharded over explicit mesh axes: every device sums its own examples
    # (shard_map), then the sums are reduced. Per-batch Fisher needs every minibatch on one device.
    mesh, axes = explicit
    devices = int(np.prod([dict(zip(mesh.axis_names, mesh.axis_sizes))[a] for a in axes]))
    n = example_count(data, name="data")
    if n % devices == 0 and (per_example or (n // devices) % batch_size == 0):
      lead = axes if len(axes) > 1 else axes[0]
      data = jax.tree_util.tree_map(
          lambda x: jax.sharding.reshard(x, NamedSharding(mesh, PartitionSpec(lead))), data)
      params = jax.tree_util.tree_map(_replicated, params)
      return jax.shard_map(functools.partial(local, axis_name=axes), mesh=mesh,
                           in_specs=(PartitionSpec(), PartitionSpec(lead)), out_specs=PartitionSpec())(params, data)
    # Otherwise minibatches straddle devices: gather the data (every device computes it all).
    data = jax.tree_util.tree_map(_replicated, data)
  return local(params, data, axis_name=None if axis_name is None else _axes(axis_name))


def _reporter(progress, axis_name):
  """``report(done, total)`` inside the compiled pass: a host callback, from the first device only
  when the pass runs per device."""
  if progress is None:
    return lambda done, total, after: None

  def host(done, total, _after):
    progress(int(done), int(total))

  def report(done, total, after):
    # ``after`` (a value of the accumulator) orders the call after the work it reports: callbacks
    # are unordered effects (ordered ones are refused on several devices).
    after = jax.tree_util.tree_leaves(after)[0].reshape(-1)[0]
    if axis_name is None:
      jax.debug.callback(host, done, total, after)
    else:
      jax.lax.cond(jax.lax.axis_index(axis_name) == 0, lambda: jax.debug.callback(host, done, total, after),
                   lambda: None)
  return report


def _mask_of(data):
  return data.get("mask") if isinstance(data, dict) else None


def _masked_example_loss(loss_fn):
  """``loss_fn`` on a one-example batch times that example's mask: a padding row's gradient is
  zero even for a loss that ignores the mask."""
  def loss(p, batch):
    return loss_fn(p, batch) * jnp.sum(batch["mask"]).astype(jnp.float32)

  return loss


def _local_fisher(loss_fn, params, data, *, batch_size, per_example, axis_name, unroll, method, micro_batch, progress):
  if axis_name is not None:
    params = jax.tree_util.tree_map(lambda p: vary(p, axis_name), params)
  n = example_count(data, name="data")
  n_full, rem = divmod(n, batch_size)
  report = _reporter(progress, axis_name)
  masked = _mask_of(data) is not None
  if masked and per_example:
    loss_fn = _masked_example_loss(loss_fn)

  if per_example and method == "decompose":
    def chunk_stat(acc, chunk):
      sq = fastfisher.squared_grad_sum(loss_fn, params, chunk)
      return jax.tree_util.tree_map(jnp.add, acc, sq)
  elif per_example:
    def example_loss(p, example):
      return loss_fn(p, jax.tree_util.tree_map(lambda x: x[None], example))

    per_example_grads = jax.vmap(jax.grad(example_loss), in_axes=(None, 0))

    def chunk_stat(acc, chunk):
      return _add_sq(acc, per_example_grads(params, chunk), axis=0)
  else:
    grad = batch_grad(loss_fn, micro_batch)

    def chunk_stat(acc, chunk):
      g = grad(params, chunk)
      if masked:  # a minibatch of padding only counts for nothing
        real = (jnp.sum(chunk["mask"]) > 0).astype(jnp.float32)
        g = jax.tree_util.tree_map(lambda x: x * real, g)
      return _add_sq(acc, g, axis=None)

  if rem:
    # Slicing an explicitly sharded axis unevenly is not allowed: gather such data first.
    data = jax.tree_util.tree_map(_replicated, data)
  acc = _zeros_f32(params)
  if axis_name is not None:
    acc = jax.tree_util.tree_map(lambda a: vary(a, axis_name), acc)
  if n_full:
    head = jax.tree_util.tree_map(lambda x: x[: n_full * batch_size], data)
    if per_example:
      # Chunk c holds examples c, c + n_full, c + 2 n_full, ...: the sum over all examples is the
      # same, and a leading axis sharded over devices stays sharded inside every chunk.
      chunks = jax.tree_util.tree_map(
          lambda x: jnp.swapaxes(x.reshape((batch_size, n_full) + x.shape[1:]), 0, 1), head
      )
    else:
      # Minibatches must be contiguous (parity with the original SSD code).
      chunks = jax.tree_util.tree_map(
          lambda x: _replicated(x.reshape((n_full, batch_size) + x.shape[1:])), head
      )
    total = n_full + (1 if rem else 0)

    def body(a, indexed):
      i, c = indexed
      a = chunk_stat(a, c)
      report(i + 1, total, a)
      return a, None

    acc, _ = jax.lax.scan(body, acc, (jnp.arange(n_full), chunks), unroll=unroll)
  if rem:
    acc = chunk_stat(acc, jax.tree_util.tree_map(lambda x: x[n_full * batch_size:], data))
    report(n_full + 1, n_full + 1, acc)

  if not masked:
    count = jnp.float32(n if per_example else n_full + (1 if rem else 0))
  elif per_example:
    count = jnp.sum(_mask_of(data) != 0).astype(jnp.float32)
  else:
    live = (_mask_of(data) != 0).astype(jnp.float32)
    chunks = [jnp.sum(live[: n_full * batch_size].reshape(n_full, batch_size), axis=1)] if n_full else []
    chunks += [jnp.sum(live[n_full * batch_size:], keepdims=True)] if rem else []
    count = jnp.sum(jnp.concatenate(chunks) > 0).astype(jnp.float32)
  if axis_name is not None:
    acc = jax.lax.psum(acc, axis_name)
    count = jax.lax.psum(vary(count, axis_name), axis_name)
  return jax.tree_util.tree_map(lambda a, p: (a / count).astype(jnp.asarray(p).dtype), acc, params)


def bucketed(data: Any, batch_size: int) -> dict:
  r"""``data`` (a ``Dataset`` or a batch dict) padded with zero rows (ids -1) to a bucket size,
  with a ``"mask"`` (1 real, 0 padding; an existing mask is kept): :func:`fisher_diagonal` of the
  result equals that of ``data`` (up to float summation order), and sets of nearby sizes share
  one compiled pass.

  The bucket: the chunk count :math:`c = \lceil n / B \rceil` rounded up to a multiple of
  :math:`2^{\max(0, b - 3)}`, :math:`b` the bit length of :math:`c`: exact up to 8 chunks, then
  8 sizes per doubling, so at most a quarter of the rows are padding.

  Example:
    >>> import numpy as np
    >>> from jaxunlearn._src.importance import bucketed
    >>> b = bucketed({"x": np.ones((37, 2), np.float32), "y": np.zeros(37, np.int32)}, batch_size=4)
    >>> b["x"].shape, int(b["mask"].sum())   # 10 chunks of 4 -> 10 (a multiple of 2)
    ((40, 2), 37)
    >>> bucketed({"x": np.ones((70, 2), np.float32)}, batch_size=4)["x"].shape   # 18 -> 20 chunks
    (80, 2)
  """
  if isinstance(data, Dataset):
    data = data.as_batch()
  if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
  n = example_count(data, name="data")
  chunks = -(-n // batch_size)
  step = 1 << max(0, chunks.bit_length() - 3)
  size = batch_size * (-(-chunks // step) * step)
  data = dict(data)
  if "mask" not in data:
    data["mask"] = np.ones(n, np.float32)

  def pad(name, x):
    x = np.asarray(x)
    if size == n:
      return x
    fill = np.full((size - n,) + x.shape[1:], -1 if name == "ids" else 0, x.dtype)
    return np.concatenate([x, fill])

  return {k: pad(k, v) for k, v in data.items()}


def fisher_diagonal(
    loss_fn: LossFn,
    params: Params,
    data: Any,
    *,
    batch_size: int,
    per_example: bool = True,
    axis_name: str | None = None,
    unroll: int | bool = 1,
    method: str = "decompose",
    micro_batch: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Params:
  r"""Diagonal of the empirical Fisher information of ``loss_fn`` over ``data``.

  With ``per_example=True`` (the default) the importance of parameter :math:`j` is the mean over
  the :math:`n` examples of the squared per-example gradient,

  .. math:: I_j = \frac{1}{n} \sum_{i=1}^{n} \Big(\frac{\partial \ell(\theta; z_i)}{\partial \theta_j}\Big)^2,

  which does not depend on ``batch_size`` (that only bounds memory: ``batch_size`` per-example
  gradients exist at once). With ``per_example=False`` it is the mean over the :math:`B`
  minibatches :math:`b` (of ``batch_size`` examples, the last one possibly smaller) of the squared
  minibatch-mean gradient, :math:`I_j = \frac1B \sum_b (\partial_j \bar\ell_b)^2`, the definition
  the original SSD code computes (Foster et al., AAAI 2024), kept for parity.

  A ``"mask"`` entry in ``data`` (1 for a real example, 0 for padding, as in the library's
  batches) leaves padding out: a padding row adds nothing and is not counted (with
  ``per_example=False`` a minibatch of padding only is not counted, and a partly padded one needs a
  loss that honours the mask, as the library's do). The recipes pad their sets to a few sizes
  that way, so that requests of many sizes share one compiled pass.

  The pass is one jit-compiled ``lax.scan`` over full chunks plus one call for the remainder, so
  memory stays bounded for large data. Squares accumulate in float32; the result has the dtype of
  each parameter. Under ``pmap``, pass ``axis_name``: every device computes sums over its local
  data and the result is ``psum(sums) / psum(counts)``, the same as one device holding all data.
  The same holds inside ``shard_map`` with replicated parameters (``in_specs=(P(), P("data"))``):
  parameters are marked as varying over ``axis_name`` so that each device differentiates its own
  examples (an unvarying parameter's gradient would be summed over the devices).
  Under ``jit`` with data sharded over a ``Mesh``, call it as is, without ``axis_name``. With
  explicit axis types (``jax.make_mesh``'s default) every device sums its own examples in a
  ``shard_map`` whenever the shards divide evenly (and, for ``per_example=False``, every minibatch
  lies on one device); otherwise the data are gathered first. With auto axis types the compiler
  partitions the pass.

  Args:
    loss_fn: ``loss(params, batch) -> scalar`` giving the *mean* loss of a batch (it is called on
      single-example batches when ``per_example``). Must be hashable (a function is).
    params: parameter pytree.
    data: pytree of arrays sharing a leading example axis, e.g. ``{"x": x, "y": y}``, or a
      ``jaxunlearn.data.Dataset`` (its ``as_batch()``).
    batch_size: examples per chunk (per minibatch when ``per_example=False``).
    per_example: squared per-example gradients (True) or squared minibatch gradients (False).
    axis_name: the ``pmap``/``shard_map`` axis (or tuple of axes) to reduce over, if any.
    unroll: passed to ``lax.scan``. ``True`` unrolls the loop: XLA:CPU runs ``lax.conv``
      convolutions ~30x slower inside a rolled loop. The reference CNN computes its convolutions
      as matmuls and is fastest rolled (the default).
    method: how per-example squares are formed. ``"decompose"`` (default) works on the traced
      program of ``loss_fn``: for every dense kernel and bias the sum of squared per-example
      gradients is :math:`(a^{\circ 2})^\top(\delta^{\circ 2})` (inputs and output cotangents of
      the layer, one backward pass, no per-example gradient materialised); kernels applied to
      several rows per example (sequence layers, convolutions written as matmuls) get their
      per-example gradients :math:`a_i^\top\delta_i` from the same pass; other leaves use
      ``vmap(grad)``. ``"vmap"``: ``vmap(grad)`` for every leaf. Both give the same numbers up
      to float rounding. Ignored when ``per_example=False``.
    micro_batch: with ``per_example=False`` only: compute each minibatch's gradient in
      micro-batches of this many examples (``microbatch_value_and_grad``; same minibatches, same
      result up to rounding, less memory, and faster for convolutional networks on CPU). With
      ``per_example=True`` lower ``batch_size`` instead.
    progress: ``progress(done, total)``, called from the host as chunks of ``batch_size``
      examples finish (``jax.debug.callback`` inside the compiled loop: the numbers are unchanged).
      Under ``pmap``/``shard_map`` (and with explicitly sharded data) the first device reports
      its own chunks. Must be hashable (a function is).

  Returns:
    A pytree shaped like ``params``: the diagonal Fisher, non-negative.

  Raises:
    ValueError: bad arguments, no examples, or (when called outside ``jit``) a non-finite result,
      e.g. from a label out of range (the library's losses make such a gradient NaN, not zero).

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxunlearn
    >>> loss = lambda p, b: jnp.mean((b["x"] * p["w"] - b["y"]) ** 2)
    >>> data = {"x": jnp.array([1.0, 2.0]), "y": jnp.array([0.0, 0.0])}
    >>> # per-example gradients 2*x^2*w = [2, 8] at w=1: mean of squares = (4 + 64) / 2
    >>> jaxunlearn.fisher_diagonal(loss, {"w": jnp.float32(1.0)}, data, batch_size=1)["w"]
    Array(34., dtype=float32)
  """
  if isinstance(data, Dataset):
    data = data.as_batch()
  if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
  if example_count(data, name="data") == 0:
    raise ValueError("data holds no examples: the Fisher of an empty set is undefined.")
  if method not in ("decompose", "vmap"):
    raise ValueError(f"unknown method {method!r}; expected 'decompose' or 'vmap'.")
  if micro_batch is not None:
    if per_example:
      raise ValueError("micro_batch applies to per_example=False; with per_example=True lower batch_size "
                       "instead (it only bounds how many per-example gradients exist at once).")
    micro_batch = check_micro_batch(micro_batch)
  out = _fisher(
      loss_fn,
      params,
      data,
      batch_size=int(batch_size),
      per_example=bool(per_example),
      axis_name=axis_name,
      unroll=unroll,
      method=method,
      micro_batch=micro_batch,
      progress=progress,
  )
  # A NaN loss or gradient (an out-of-range label, a non-finite input) must not pass for a Fisher.
  check_finite(out, name="the Fisher diagonal", hint="the loss or its gradient is NaN/inf on some example: "
               "check that labels are in range and inputs finite")
  return out
