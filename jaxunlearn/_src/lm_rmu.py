"""RMU (representation misdirection for unlearning; Li et al., "The WMDP Benchmark", ICML 2024)
as a language-model recipe, on the driver of ``lm_recipes`` (same signature, pairing, stats,
accumulation, mixed precision, sharding and validation)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn._src import lm_losses
from jaxunlearn._src.base import path_mask, resolve_mask
from jaxunlearn._src.lm_recipes import Batch, _check, _drive, _in_dtype, _row_mean, _schedule


def _masked_mse_rows(acts, target, mask):
  """Per row: sum over masked positions of the feature-mean squared error, over the masked count."""
  acts = acts.astype(jnp.float32)
  sq = jnp.mean(jnp.square(acts - jnp.broadcast_to(target.astype(jnp.float32), acts.shape)), axis=-1)
  m = mask.astype(jnp.float32)
  return jnp.sum(sq * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)


@functools.lru_cache(maxsize=16)
def _rmu_step(hidden_fn, tx, alpha: float):
  def loss(params, frozen, control, fb, rb):
    fmask = fb["labels"] != lm_losses.IGNORE
    forget_rows = _masked_mse_rows(hidden_fn(params, fb["input_ids"]), control[None, None, :], fmask)
    total = _row_mean(forget_rows, fb["labels"])
    if rb is not None:
      rmask = rb["labels"] != lm_losses.IGNORE
      target = jax.lax.stop_gradient(hidden_fn(frozen, rb["input_ids"]))
      total = total + alpha * _row_mean(_masked_mse_rows(hidden_fn(params, rb["input_ids"]), target, rmask),
                                        rb["labels"])
    return total

  @jax.jit
  def step(params, state, frozen, control, fb, rb):
    updates, state = tx.update(jax.grad(loss)(params, frozen, control, fb, rb), state, params)
    return optax.apply_updates(params, updates), state

  return step


@functools.lru_cache(maxsize=32)
def _rmu_optimizer(trainable: str, treedef, learning_rate, weight_decay, steps, accumulate):
  """AdamW on the parameters whose path matches ``trainable``, zero updates elsewhere (one object
  per setting and parameter structure, as ``_optimizer``)."""
  selected = resolve_mask(path_mask(trainable), jax.tree.unflatten(treedef, [0] * treedef.num_leaves))
  frozen = jax.tree.map(lambda m: not m, selected)
  return optax.chain(optax.masked(_schedule(learning_rate, weight_decay, steps, accumulate), selected),
                     optax.masked(optax.set_to_zero(), frozen))


def rmu(lm: Any, params: Any, *, forget: Batch, retain: Batch | None, seed: int = 0, epochs: int = 10,
        batch_size: int = 32, learning_rate: float = 3e-3, weight_decay: float = 0.0, steering: float = 2.0,
        alpha: float = 1.0, trainable: str = "blocks/[0-9]+/mlp/down", accumulate: int = 1, compute_dtype: Any = None, progress: Callable[[int, int], None] | None = None, batch_sharding: Any = None, validation: Any = None,
        stats: dict | None = None) -> Any:
  r"""Representation misdirection for unlearning (RMU; Li et al., "The WMDP Benchmark", ICML 2024).

  A control vector :math:`c\,u/\|u\|`, :math:`u \sim U[0, 1)^D` drawn once from ``seed``
  (:math:`c` = ``steering``), is the target of the activations :math:`h_\theta` at ``lm.hidden_fn``'s
  layer on the forget answers' tokens; on the retain answers' tokens the activations are held to the
  frozen starting model's:

  .. math:: \mathcal L = \mathrm{MSE}_{m}\big(h_\theta(x_f), c\,u/\|u\|\big) +
     \alpha\,\mathrm{MSE}_{m}\big(h_\theta(x_r), h_{\theta_0}(x_r)\big)

  (``jaxunlearn.lm.losses.rmu_activation_loss``, per row over the scored tokens). Only the
  parameters whose path matches the regular expression ``trainable`` (whole ``/`` segments,
  ``jaxunlearn.path_mask``) train, through an optax mask (AdamW on them, zero updates elsewhere);
  the default, every block's MLP down-projection, is WMDP's choice of ``mlp.down_proj``. Defaults:
  steering 2 and alpha 1 (open-unlearning's TOFU config); learning rate 3e-3, measured on this
  package's benchmark (1e-3 forgot less at the same utility).

  Raises:
    ValueError: ``lm`` has no ``hidden_fn``, or ``trainable`` selects no parameter.
  """
  hidden_fn = getattr(lm, "hidden_fn", None)
  if hidden_fn is None:
    raise ValueError("rmu needs lm.hidden_fn(params, input_ids) -> [B, T, D] (the activations to steer).")
  forget = _check(forget, "forget")
  retain = _check(retain, "retain") if retain is not None and alpha else None
  try:
    resolve_mask(path_mask(trainable), params)  # a regex that selects nothing is refused here, by name
  except ValueError as err:  # names every parameter path
    raise ValueError(f"rmu: trainable={trainable!r} selects no parameter ({err})") from None
  dim = int(hidden_fn(params, jnp.asarray(forget["input_ids"][:1])).shape[-1])
  u = np.random.default_rng(seed).uniform(size=dim)
  control = jnp.asarray(steering * u / np.linalg.norm(u), jnp.float32)
  steps = epochs * -(-len(forget["input_ids"]) // batch_size)
  tx = _rmu_optimizer(trainable, jax.tree.structure(params), float(learning_rate), float(weight_decay), steps,
                      accumulate)
  step = _rmu_step(_in_dtype(hidden_fn, compute_dtype), tx, float(alpha))
  frozen = params
  return _drive(lambda p, st, fb, rb: step(p, st, frozen, control, fb, rb), params, tx.init(params), forget, retain,
                epochs=epochs, batch_size=batch_size, seed=seed, progress=progress, stats=stats, batch_sharding=batch_sharding, validation=validation, retain_passes=2)
