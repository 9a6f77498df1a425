"""Per-parameter importance: the diagonal of the empirical Fisher information."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxunlearn._src import fastfisher
from jaxunlearn._src.microbatch import batch_grad, check_micro_batch
from jaxunlearn._src.base import LossFn, Params, example_count


def _zeros_f32(params: Params) -> Params:
  return jax.tree_util.tree_map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)


def _add_sq(acc: Params, grads: Params, axis: int | None) -> Params:
  """acc + sum of squared grads (over ``axis`` when grads carry an example axis)."""

  def leaf(a, g):
    g2 = jnp.square(g.astype(jnp.float32))
    return a + (jnp.sum(g2, axis=axis) if axis is not None else g2)

  return jax.tree_util.tree_map(leaf, acc, grads)


def _unshard_leading(x: jax.Array) -> jax.Array:
  """Gathers an array whose leading axis is explicitly sharded (``lax.scan`` cannot scan over it)."""
  sharding = getattr(jax.typeof(x), "sharding", None)
  spec = getattr(sharding, "spec", None)
  if spec is not None and len(spec) and spec[0] is not None and getattr(sharding, "mesh", None) is not None:
    return jax.sharding.reshard(x, NamedSharding(sharding.mesh, PartitionSpec(*([None] * x.ndim))))
  return x


@functools.partial(jax.jit, static_argnames=("loss_fn", "batch_size", "per_example", "axis_name", "unroll", "method", "micro_batch"))
def _fisher(loss_fn, params, data, *, batch_size, per_example, axis_name, unroll, method="decompose", micro_batch=None):
  n = example_count(data, name="data")
  n_full, rem = divmod(n, batch_size)

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
      return _add_sq(acc, grad(params, chunk), axis=None)

  if rem:
    # Slicing an explicitly sharded axis unevenly is not allowed: gather such data first.
    data = jax.tree_util.tree_map(_unshard_leading, data)
  acc = _zeros_f32(params)
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
          lambda x: _unshard_leading(x.reshape((n_full, batch_size) + x.shape[1:])), head
      )
    acc, _ = jax.lax.scan(lambda a, c: (chunk_stat(a, c), None), acc, chunks, unroll=unroll)
  if rem:
    acc = chunk_stat(acc, jax.tree_util.tree_map(lambda x: x[n_full * batch_size:], data))

  count = jnp.float32(n if per_example else n_full + (1 if rem else 0))
  if axis_name is not None:
    acc = jax.lax.psum(acc, axis_name)
    count = jax.lax.psum(count, axis_name)
  return jax.tree_util.tree_map(lambda a, p: (a / count).astype(jnp.asarray(p).dtype), acc, params)


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

  The pass is one jit-compiled ``lax.scan`` over full chunks plus one call for the remainder, so
  memory stays bounded for large data. Squares accumulate in float32; the result has the dtype of
  each parameter. Under ``pmap``, pass ``axis_name``: every device computes sums over its local
  data and the result is ``psum(sums) / psum(counts)``, the same as one device holding all data.
  Under ``jit`` with data sharded over a ``Mesh``, call it as is: with ``per_example=True`` and
  ``n`` a multiple of ``batch_size``, every chunk stays spread over the devices; otherwise data
  whose example axis is sharded with explicit axis types is gathered first.

  Args:
    loss_fn: ``loss(params, batch) -> scalar`` giving the *mean* loss of a batch (it is called on
      single-example batches when ``per_example``). Must be hashable (a function is).
    params: parameter pytree.
    data: pytree of arrays sharing a leading example axis, e.g. ``{"x": x, "y": y}``.
    batch_size: examples per chunk (per minibatch when ``per_example=False``).
    per_example: squared per-example gradients (True) or squared minibatch gradients (False).
    axis_name: the ``pmap``/``shard_map`` axis to reduce over, if any.
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

  Returns:
    A pytree shaped like ``params``: the diagonal Fisher, non-negative.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxunlearn
    >>> loss = lambda p, b: jnp.mean((b["x"] * p["w"] - b["y"]) ** 2)
    >>> data = {"x": jnp.array([1.0, 2.0]), "y": jnp.array([0.0, 0.0])}
    >>> # per-example gradients 2*x^2*w = [2, 8] at w=1: mean of squares = (4 + 64) / 2
    >>> jaxunlearn.fisher_diagonal(loss, {"w": jnp.float32(1.0)}, data, batch_size=1)["w"]
    Array(34., dtype=float32)
  """
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
  return _fisher(
      loss_fn,
      params,
      data,
      batch_size=int(batch_size),
      per_example=bool(per_example),
      axis_name=axis_name,
      unroll=unroll,
      method=method,
      micro_batch=micro_batch,
  )
