"""A small, deterministic optax training loop and batched prediction for the reference models."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn._src import data as data_lib
from jaxunlearn._src.base import ApplyFn, LossFn, Params
from jaxunlearn._src.microbatch import check_micro_batch, microbatch_value_and_grad


@functools.lru_cache(maxsize=64)
def compiled_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, micro_batch: int | None = None,
                   stateful: bool = False):
  # Cached by the identity of loss_fn and optimizer: the same objects reuse one compiled step.
  if stateful:
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

    @jax.jit
    def stateful_step(params, opt_state, batch, state):
      (loss, state), grads = value_and_grad(params, batch, state)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss, state

    return stateful_step
  value_and_grad = jax.value_and_grad(loss_fn) if micro_batch is None else microbatch_value_and_grad(
      loss_fn, micro_batch)

  @jax.jit
  def step(params, opt_state, batch):
    loss, grads = value_and_grad(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def fit(
    loss_fn: LossFn,
    params: Params,
    ds: data_lib.Dataset,
    *,
    optimizer: optax.GradientTransformation,
    epochs: int,
    batch_size: int,
    seed: int,
    micro_batch: int | None = None,
    state: Any = None,
    progress: Callable[[int, int], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> Params | tuple[Params, Any]:
  """Trains ``params`` by minimising ``loss_fn`` over ``epochs`` passes of ``ds``.

  Batches come from ``data.batches(ds, batch_size, seed=seed, epoch=e)``: the order depends on
  the example ids and the seed only, and the last batch is padded with a zero mask (one compile).
  The same inputs give bit-identical parameters on the same backend.

  The compiled step is cached by the *identity* of ``loss_fn`` and ``optimizer`` (as ``jax.jit``
  caches by function): ``loss_fn`` is traced once, so anything it reads from outside its
  arguments (a global, a closure over mutable batch-norm statistics) is frozen at the first call.
  Pass such values as ``state`` instead: they are then arguments, updated every step.

  Args:
    loss_fn: ``loss(params, batch) -> scalar`` honouring ``batch["mask"]`` (the builders in
      ``jaxunlearn.losses`` do); with ``state``, ``loss(params, batch, state) -> (scalar,
      new_state)``.
    params: initial parameters.
    ds: training data.
    optimizer: any optax transformation.
    epochs: passes over the data (>= 0).
    batch_size: examples per step.
    seed: shuffle seed.
    micro_batch: if set, each step's gradient is computed in micro-batches of this many examples
      (``jaxunlearn.microbatch_value_and_grad``): the same steps up to float rounding, less
      memory; faster for convolutional networks on CPU.
    state: non-parameter state the loss reads and updates (batch-norm statistics, an NNX
      model's non-``Param`` state from ``nnx.split(model, nnx.Param, ...)``); it is not
      differentiated, and each step's new state feeds the next step.

    progress: called as ``progress(epoch, epochs)`` after each epoch (it blocks on that epoch's
      result, so a progress bar shows real progress).
    mesh: data-parallel training: each batch is split along its example axis over every device
      of ``mesh`` (``batch_size`` must divide evenly), the parameters and optimizer state are
      replicated, and the gradient is reduced across devices by the compiler. In several
      processes (``jax.distributed``) the mesh spans every process's devices, each process passes
      the same ``ds`` and makes the same call, and the result is the one-process result (up to
      the order of the cross-device sum); the returned arrays are global (replicated): read them
      with ``jaxunlearn.distributed.to_host``.

  Returns:
    The trained parameters; with ``state``, ``(params, state)``.

  Example:
    >>> import jax, optax
    >>> from jaxunlearn import data, losses, models, training
    >>> train, test = data.load("digits")
    >>> apply, params = models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
    >>> params = training.fit(losses.cross_entropy_loss(apply), params, train,
    ...                       optimizer=optax.adam(1e-3), epochs=5, batch_size=128, seed=0)
    >>> training.dataset_accuracy(apply, params, test) > 0.9
    True
  """
  if epochs < 0:
    raise ValueError(f"epochs must be >= 0, got {epochs}.")
  micro_batch = None if micro_batch is None else check_micro_batch(micro_batch)
  if state is not None and micro_batch is not None:
    raise ValueError("micro_batch and state cannot be combined: the state of one micro-batch would feed the next.")
  step = compiled_step(loss_fn, optimizer, micro_batch, state is not None)
  place = lambda batch: batch  # noqa: E731
  if mesh is not None:
    if batch_size % mesh.size:
      raise ValueError(f"batch_size {batch_size} does not split evenly over the mesh's {mesh.size} devices.")
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(tuple(mesh.axis_names)))
    params = jax.device_put(params, replicated)
    state = None if state is None else jax.device_put(state, replicated)
    place = lambda batch: jax.device_put(batch, rows)  # noqa: E731
  opt_state = optimizer.init(params)
  for epoch in range(epochs):
    for batch in map(place, data_lib.batches(ds, batch_size, seed=seed, epoch=epoch)):
      if state is None:
        params, opt_state, _ = step(params, opt_state, batch)
      else:
        params, opt_state, _, state = step(params, opt_state, batch, state)
    if progress is not None:
      jax.block_until_ready(params)
      progress(epoch + 1, epochs)
  return params if state is None else (params, state)


@functools.lru_cache(maxsize=64)
def _compiled_apply(apply_fn: ApplyFn):
  return jax.jit(apply_fn)


def predict(apply_fn: ApplyFn, params: Params, x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
  """Logits of ``apply_fn`` on ``x`` as a float32 NumPy array, in fixed-size jitted chunks: of
  ``batch_size`` rows, or for fewer inputs the next power of two (padded), so that inputs of many
  sizes share a few programs."""
  fn = _compiled_apply(apply_fn)
  n = len(x)
  if n == 0:
    raise ValueError("predict got no inputs.")
  size = min(batch_size, 1 << max(0, (n - 1).bit_length()))
  out = []
  for start in range(0, n, size):
    chunk = x[start:start + size]
    pad = size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    logits = np.asarray(fn(params, jnp.asarray(chunk)), dtype=np.float32)
    out.append(logits[:len(logits) - pad])
  return np.concatenate(out)


def dataset_accuracy(apply_fn: ApplyFn, params: Params, ds: data_lib.Dataset) -> float:
  """Top-1 accuracy of ``apply_fn(params, .)`` on the dataset ``ds`` (predicts in jitted chunks).

  ``jaxunlearn.metrics.accuracy(logits, labels)`` is the array-level metric on logits already
  computed.
  """
  return float(np.mean(np.argmax(predict(apply_fn, params, ds.x), axis=-1) == ds.y))


def accuracy(apply_fn: ApplyFn, params: Params, ds: data_lib.Dataset) -> float:
  """Deprecated name of :func:`dataset_accuracy` (it clashed with ``metrics.accuracy``)."""
  warnings.warn("jaxunlearn.training.accuracy is deprecated: use training.dataset_accuracy (the same function).",
                DeprecationWarning, stacklevel=2)
  return dataset_accuracy(apply_fn, params, ds)
