"""Complete unlearning procedures, built only from the library's transforms and statistics.

Each recipe takes a loss builder's ``loss(params, batch)``, the trained parameters and the
forget/retain data, and returns unlearned parameters. They are what ``jaxunlearn demo`` runs.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import optax

from jaxunlearn._src import data as data_lib
from jaxunlearn._src import training
from jaxunlearn._src.ascent import gradient_ascent, gradient_difference
from jaxunlearn._src.base import LossFn, Mask, Params, PRNGKey
from jaxunlearn._src.importance import fisher_diagonal
from jaxunlearn._src.microbatch import batch_grad, check_micro_batch
from jaxunlearn._src.reset import reset_params
from jaxunlearn._src.ssd import ssd_dampen


def _arrays(ds: data_lib.Dataset) -> dict[str, jax.Array]:
  return {"x": jnp.asarray(ds.x), "y": jnp.asarray(ds.y), "ids": jnp.asarray(ds.ids)}


# Every recipe that trains takes ``state=``: non-parameter state (batch-norm statistics, an NNX
# model's non-Param state) for a ``loss(params, batch, state) -> (loss, new_state)``; it then
# returns ``(params, state)`` (see ``training.fit``).


def finetune(
    loss_fn: LossFn, params: Params, retain: data_lib.Dataset, *, optimizer, epochs: int, batch_size: int, seed: int,
    state=None,
):
  """Fine-tunes on the retain set alone (the "catastrophic forgetting" baseline)."""
  return training.fit(loss_fn, params, retain, optimizer=optimizer, epochs=epochs, batch_size=batch_size, seed=seed,
                      state=state)


def ascend(
    loss_fn: LossFn, params: Params, forget: data_lib.Dataset, *, optimizer, epochs: int, batch_size: int, seed: int,
    state=None,
):
  """Gradient ascent on the forget loss: ``fit`` with ``chain(gradient_ascent(), optimizer)``."""
  tx = _ascent_chain(optimizer)
  return training.fit(loss_fn, params, forget, optimizer=tx, epochs=epochs, batch_size=batch_size, seed=seed,
                      state=state)


@functools.lru_cache(maxsize=32)
def _ascent_chain(optimizer) -> optax.GradientTransformationExtraArgs:
  # Cached so that the same optimizer gives the same chain object, hence one compiled step.
  return optax.chain(gradient_ascent(), optimizer)


@functools.lru_cache(maxsize=32)
def _graddiff_step(
    loss_fn: LossFn, optimizer, forget_weight: float, retain_weight: float, micro_batch: int | None = None,
    stateful: bool = False,
):
  tx = optax.chain(gradient_difference(forget_weight, retain_weight), optimizer)
  if stateful:
    grad_aux = jax.grad(loss_fn, has_aux=True)

    @jax.jit
    def stateful_step(params, opt_state, forget_batch, retain_batch, state):
      forget_grads, state = grad_aux(params, forget_batch, state)
      retain_grads, state = grad_aux(params, retain_batch, state)
      updates, opt_state = tx.update(forget_grads, opt_state, params, retain_grads=retain_grads)
      return optax.apply_updates(params, updates), opt_state, state

    return tx, stateful_step
  grad = batch_grad(loss_fn, micro_batch)

  @jax.jit
  def step(params, state, forget_batch, retain_batch):
    forget_grads = grad(params, forget_batch)
    retain_grads = grad(params, retain_batch)
    updates, state = tx.update(forget_grads, state, params, retain_grads=retain_grads)
    return optax.apply_updates(params, updates), state

  return tx, step


def graddiff(
    loss_fn: LossFn,
    params: Params,
    forget: data_lib.Dataset,
    retain: data_lib.Dataset,
    *,
    optimizer,
    epochs: int,
    batch_size: int,
    seed: int,
    forget_weight: float = 1.0,
    retain_weight: float = 1.0,
    micro_batch: int | None = None,
    state=None,
):
  """Gradient difference: each step pairs a retain batch with the next (cycled) forget batch.

  One epoch is one pass over the retain set; the update is ``optimizer`` applied to
  ``retain_weight * g_retain - forget_weight * g_forget``. With ``micro_batch``, both gradients
  are computed in micro-batches (``microbatch_value_and_grad``). With ``state``, the forget batch
  then the retain batch update it, and ``(params, state)`` is returned.
  """
  micro_batch = None if micro_batch is None else check_micro_batch(micro_batch)
  if state is not None and micro_batch is not None:
    raise ValueError("micro_batch and state cannot be combined: the state of one micro-batch would feed the next.")
  tx, step = _graddiff_step(loss_fn, optimizer, float(forget_weight), float(retain_weight), micro_batch,
                            state is not None)
  opt_state = tx.init(params)
  forget_size = min(batch_size, len(forget))
  forget_stream = itertools.chain.from_iterable(
      data_lib.batches(forget, forget_size, seed=seed + 1, epoch=e) for e in itertools.count()
  )
  for epoch in range(epochs):
    for retain_batch in data_lib.batches(retain, batch_size, seed=seed, epoch=epoch):
      if state is None:
        params, opt_state = step(params, opt_state, next(forget_stream), retain_batch)
      else:
        params, opt_state, state = step(params, opt_state, next(forget_stream), retain_batch, state)
  return params if state is None else (params, state)


def ssd(
    loss_fn: LossFn,
    params: Params,
    forget: data_lib.Dataset,
    full: data_lib.Dataset,
    *,
    alpha: float,
    dampening: float,
    batch_size: int,
    per_example: bool = True,
) -> Params:
  """Selective Synaptic Dampening: Fisher importances on forget and full data, then ``ssd_dampen``."""
  i_f = fisher_diagonal(loss_fn, params, _arrays(forget), batch_size=batch_size, per_example=per_example)
  i_d = fisher_diagonal(loss_fn, params, _arrays(full), batch_size=batch_size, per_example=per_example)
  return ssd_dampen(params, i_f, i_d, alpha=alpha, dampening=dampening)


def reset_repair(
    loss_fn: LossFn,
    params: Params,
    retain: data_lib.Dataset,
    *,
    mask: Mask,
    init_fn,
    key: PRNGKey,
    optimizer,
    epochs: int,
    batch_size: int,
    seed: int,
    state=None,
):
  """Re-initialises the masked layers from ``init_fn(key)``, then fine-tunes on the retain set."""
  params = reset_params(params, init_fn(key), mask)
  return training.fit(loss_fn, params, retain, optimizer=optimizer, epochs=epochs, batch_size=batch_size, seed=seed,
                      state=state)
