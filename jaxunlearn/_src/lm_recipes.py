"""Language-model unlearning recipes, one signature for all:
``recipe(lm, params, *, forget, retain, seed, **hyper) -> params``.

``lm`` is anything with a ``logits_fn(params, input_ids) -> [B, T, V]`` attribute (``jaxunlearn.lm
.models.LM``, or ``types.SimpleNamespace(logits_fn=...)`` around a user's model); ``forget`` and
``retain`` are Hugging Face-style batches (``input_ids``, ``attention_mask``, ``labels``; NumPy or
JAX arrays of ``[N, T]``). An epoch is one pass over the forget set in minibatches of
``batch_size``, each paired with a random retain minibatch (TOFU's schedule). The updates are the
library's optax transforms (``gradient_ascent``, ``gradient_difference``) chained with AdamW.

``stats``, if given a dict, receives ``steps`` and ``tokens`` (non-padding tokens through the
forward and backward passes), from which the demo reports tokens per second.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn._src import lm_data, lm_losses
from jaxunlearn._src.ascent import gradient_ascent as _ascent_tx
from jaxunlearn._src.ascent import gradient_difference as _difference_tx

Batch = dict[str, Any]


def _check(batch: Batch, name: str) -> dict[str, np.ndarray]:
  missing = {"input_ids", "labels"} - set(batch)
  if missing:
    raise ValueError(f"{name} batch lacks {sorted(missing)} (Hugging Face-style: input_ids, attention_mask, labels).")
  out = {k: np.asarray(v) for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
  if "attention_mask" not in out:
    out["attention_mask"] = np.ones_like(out["input_ids"])
  if out["input_ids"].ndim != 2 or out["labels"].shape != out["input_ids"].shape or len(out["input_ids"]) == 0:
    raise ValueError(f"{name} must hold [N, T] input_ids and labels with N > 0; got {out['input_ids'].shape} "
                     f"and {out['labels'].shape}.")
  if not np.any(out["labels"][:, 1:] != lm_losses.IGNORE):
    raise ValueError(f"{name} has no scored labels (every label is -100): there is nothing to learn or forget.")
  return out


def _schedule(learning_rate: float, weight_decay: float, steps: int) -> optax.GradientTransformation:
  return optax.adamw(optax.linear_schedule(learning_rate, 0.0, max(steps, 1)), weight_decay=weight_decay)


@functools.lru_cache(maxsize=16)
def _ascent_step(logits_fn, tx):
  loss = lm_losses.nll_loss(logits_fn)

  @jax.jit
  def step(params, state, fb):
    updates, state = tx.update(jax.grad(loss)(params, fb), state, params)
    return optax.apply_updates(params, updates), state

  return step


@functools.lru_cache(maxsize=16)
def _difference_step(logits_fn, tx, retain_loss: str):
  forget_loss = lm_losses.nll_loss(logits_fn)

  def retain_term(params, ref_params, rb):
    if retain_loss == "nll":
      return lm_losses.nll(logits_fn(params, rb["input_ids"]), rb["labels"])
    ref = jax.lax.stop_gradient(logits_fn(ref_params, rb["input_ids"]))
    return lm_losses.kl_to_reference(logits_fn(params, rb["input_ids"]), ref)

  @jax.jit
  def step(params, state, ref_params, fb, rb):
    fg = jax.grad(forget_loss)(params, fb)
    rg = jax.grad(retain_term)(params, ref_params, rb)
    updates, state = tx.update(fg, state, params, retain_grads=rg)
    return optax.apply_updates(params, updates), state

  return step


def _epochs(forget, retain, *, epochs, batch_size, seed):
  """(forget minibatch, retain minibatch or None) pairs: every epoch one pass over the forget set."""
  rng = np.random.default_rng(seed)
  for epoch in range(epochs):
    for fb in lm_data.epoch_batches(forget, batch_size=batch_size, seed=seed, epoch=epoch):
      rb = None
      if retain is not None:
        rb = lm_data.take(retain, rng.integers(0, len(retain["input_ids"]), size=batch_size))
      yield fb, rb


def _tokens(b) -> int:
  return int(np.sum(b["attention_mask"]))


def gradient_ascent(lm: Any, params: Any, *, forget: Batch, retain: Batch | None = None, seed: int = 0,
                    epochs: int = 10, batch_size: int = 32, learning_rate: float = 2e-4, weight_decay: float = 0.01,
                    progress: Callable[[int, int], None] | None = None, stats: dict | None = None) -> Any:
  r"""Gradient ascent on the forget set's next-token NLL (TOFU's GradAscent; Jang et al. 2023):
  :math:`\theta \leftarrow \mathrm{AdamW}(-\nabla_\theta \mathrm{NLL}_{\mathrm{forget}})` with a
  linearly decaying learning rate. ``retain`` is not used.

  Example:
    >>> import jax, numpy as np
    >>> from jaxunlearn.lm import data, models, recipes
    >>> lm = models.create(models.DecoderConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64))
    >>> forget = data.qa_batch(["Who?"], ["Me."], length=32)
    >>> new = recipes.gradient_ascent(lm, lm.params, forget=forget, epochs=2)
    >>> all(bool(np.any(a != b)) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(lm.params)))
    True
  """
  del retain
  forget = _check(forget, "forget")
  steps = epochs * -(-len(forget["input_ids"]) // batch_size)
  tx = optax.chain(_ascent_tx(), _schedule(learning_rate, weight_decay, steps))
  step = _ascent_step(lm.logits_fn, tx)
  state = tx.init(params)
  tokens = 0
  for i, (fb, _) in enumerate(_epochs(forget, None, epochs=epochs, batch_size=batch_size, seed=seed)):
    params, state = step(params, state, {k: jnp.asarray(v) for k, v in fb.items()})
    tokens += _tokens(fb)
    if progress is not None:
      progress(i + 1, steps)
  params = jax.block_until_ready(params)
  if stats is not None:
    stats.update(steps=steps, tokens=tokens)
  return params


def gradient_difference(lm: Any, params: Any, *, forget: Batch, retain: Batch, seed: int = 0, epochs: int = 10,
                        batch_size: int = 32, learning_rate: float = 2e-4, weight_decay: float = 0.01,
                        retain_loss: str = "nll", forget_weight: float = 1.0, retain_weight: float = 1.0,
                        progress: Callable[[int, int], None] | None = None, stats: dict | None = None) -> Any:
  r"""Gradient difference (TOFU's GradDiff): ascend the forget NLL while descending a retain term,
  :math:`u = w_r \nabla R - w_f \nabla \mathrm{NLL}_{\mathrm{forget}}` (``gradient_difference``)
  then AdamW. :math:`R` is the retain NLL (``retain_loss="nll"``) or the KL from the starting
  model's predictions (``"kl"``: :math:`\mathrm{KL}(p_{\theta_0} \| p_\theta)` over every position
  of the retain batch, open-unlearning's ``retain_loss_type=KL``)."""
  if retain_loss not in ("nll", "kl"):
    raise ValueError(f"retain_loss must be 'nll' or 'kl', got {retain_loss!r}.")
  forget, retain = _check(forget, "forget"), _check(retain, "retain")
  steps = epochs * -(-len(forget["input_ids"]) // batch_size)
  tx = optax.chain(_difference_tx(forget_weight=forget_weight, retain_weight=retain_weight),
                   _schedule(learning_rate, weight_decay, steps))
  step = _difference_step(lm.logits_fn, tx, retain_loss)
  state = tx.init(params)
  ref = params
  tokens = 0
  for i, (fb, rb) in enumerate(_epochs(forget, retain, epochs=epochs, batch_size=batch_size, seed=seed)):
    params, state = step(params, state, ref, *({k: jnp.asarray(v) for k, v in b.items()} for b in (fb, rb)))
    tokens += _tokens(fb) + _tokens(rb) * (2 if retain_loss == "kl" else 1)
    if progress is not None:
      progress(i + 1, steps)
  params = jax.block_until_ready(params)
  if stats is not None:
    stats.update(steps=steps, tokens=tokens)
  return params
