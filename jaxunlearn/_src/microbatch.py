"""A batch's loss and gradient computed over micro-batches, one after another."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn._src.base import Batch, LossFn, Params, example_count


def _mask_of(batch: Any) -> jax.Array | None:
  return batch.get("mask") if isinstance(batch, Mapping) else None


def check_micro_batch(micro_batch: Any) -> int:
  """``micro_batch`` as an int; a ValueError naming it unless it is a positive integer."""
  if isinstance(micro_batch, bool) or not isinstance(micro_batch, (int, np.integer)) or micro_batch <= 0:
    raise ValueError(f"micro_batch must be a positive integer, got {micro_batch!r}.")
  return int(micro_batch)


def batch_grad(loss_fn: LossFn, micro_batch: int | None) -> Callable[[Params, Batch], Params]:
  """``jax.grad(loss_fn)``, micro-batched when ``micro_batch`` is set."""
  if micro_batch is None:
    return jax.grad(loss_fn)
  value_and_grad = microbatch_value_and_grad(loss_fn, micro_batch)
  return lambda params, batch: value_and_grad(params, batch)[1]


def microbatch_value_and_grad(
    loss_fn: LossFn, micro_batch: int, *, unroll: int | bool = 1
) -> Callable[[Params, Batch], tuple[jax.Array, Params]]:
  r"""``jax.value_and_grad(loss_fn)`` of a whole batch, computed ``micro_batch`` examples at a time.

  For a loss that is the mean of a per-example loss over the batch, weighted by the batch's 0/1
  ``"mask"`` when it has one (every loss in ``jaxunlearn.losses``, and any such loss plus a term
  that does not depend on the data),

  .. math:: L(\theta; B) = \sum_k w_k\, L(\theta; B_k), \qquad
            w_k = \frac{\sum_{i \in B_k} m_i}{\sum_{i \in B} m_i}
            \ \ (\text{or } |B_k| / |B| \text{ without a mask or with every } m_i = 0),

  and the same weights combine the micro-batch gradients. The micro-batches ``B_k`` take every
  ``K``-th example (``K = |B| // micro_batch``), so a batch sharded over devices along its example
  axis stays sharded in every micro-batch; the ``|B| mod micro_batch`` examples left over form one
  last micro-batch. They run as a ``lax.scan`` (``unroll`` passed on): only one micro-batch's
  activations are alive at a time. That bounds memory, and on CPUs it keeps a convolutional
  network's activations in cache: the CIFAR-size reference CNN's batch-64 gradient takes about half
  the time in micro-batches of 16 on a 2-core CPU (``benchmarks/results/vs_torch.md``). The result
  equals the one-pass gradient up to float rounding. Losses coupling examples (batch statistics,
  contrastive terms) are not means over examples and must not be split.

  Args:
    loss_fn: ``loss(params, batch) -> scalar``, a (mask-weighted) mean over the batch's examples.
    micro_batch: examples per micro-batch (a positive integer); a batch no larger runs in one pass.
    unroll: passed to ``lax.scan``.

  Returns:
    ``fn(params, batch) -> (loss, grads)``, jit-compatible, like ``jax.value_and_grad(loss_fn)``;
    the loss is float32 and ``grads`` have the dtypes of ``params``.

  Raises:
    ValueError: ``micro_batch`` not a positive integer; (when called) batch arrays without a
      common leading example axis.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxunlearn
    >>> loss = lambda p, b: jnp.mean((b["x"] * p - b["y"]) ** 2)
    >>> batch = {"x": jnp.arange(6.0), "y": jnp.ones(6)}
    >>> value, grad = jaxunlearn.microbatch_value_and_grad(loss, 4)(2.0, batch)
    >>> ref_value, ref_grad = jax.value_and_grad(loss)(2.0, batch)
    >>> bool(jnp.allclose(value, ref_value)), bool(jnp.allclose(grad, ref_grad))
    (True, True)
  """
  micro_batch = check_micro_batch(micro_batch)
  value_and_grad = jax.value_and_grad(loss_fn)

  def fn(params: Params, batch: Batch) -> tuple[jax.Array, Params]:
    n = example_count(batch, name="the batch")
    if n <= micro_batch:
      return value_and_grad(params, batch)
    k, rem = divmod(n, micro_batch)
    mask = _mask_of(batch)
    total = jnp.sum(mask.astype(jnp.float32)) if mask is not None else None

    def weight(part: Batch, size: int) -> jax.Array:
      if total is None:
        return jnp.float32(size / n)
      # A fully masked batch has no data term; the weights still sum to one for data-free terms.
      return jnp.where(total > 0, jnp.sum(_mask_of(part).astype(jnp.float32)) / jnp.maximum(total, 1.0),
                       jnp.float32(size / n))

    def add(carry, part, size):
      value, grads = value_and_grad(params, part)
      w = weight(part, size)
      acc_value, acc_grads = carry
      acc_grads = jax.tree_util.tree_map(lambda a, g: a + w * g.astype(jnp.float32), acc_grads, grads)
      return acc_value + w * value.astype(jnp.float32), acc_grads

    acc = (jnp.float32(0.0), jax.tree_util.tree_map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params))
    # Micro-batch j holds examples j, j + k, j + 2k, ... of the first k * micro_batch examples.
    head = jax.tree_util.tree_map(
        lambda x: jnp.swapaxes(x[: k * micro_batch].reshape((micro_batch, k) + x.shape[1:]), 0, 1), batch
    )
    acc, _ = jax.lax.scan(lambda c, part: (add(c, part, micro_batch), None), acc, head, unroll=unroll)
    if rem:
      acc = add(acc, jax.tree_util.tree_map(lambda x: x[k * micro_batch:], batch), rem)
    value, grads = acc
    return value, jax.tree_util.tree_map(lambda g, p: g.astype(jnp.result_type(p)), grads, params)

  return fn
