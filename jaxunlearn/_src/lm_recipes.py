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

``accumulate``: gradient accumulation, one optimizer update per ``accumulate`` minibatches with the
update directions averaged (``optax.MultiSteps``), for effective batches larger than memory
allows; the learning-rate schedule counts optimizer updates.

``compute_dtype``: mixed precision, e.g. ``jnp.bfloat16``: the model computes with its floating
parameters cast to it, while the master parameters, gradients and optimizer state keep their dtype
(float32). The reference quantities are computed in the parameters' own dtype.

``validation``: a ``Validation`` (``jaxunlearn.lm.recipes.Validation``) checked on the starting
model, every ``validation.every`` minibatches and after the last: it stops the run once its signal
is at or below ``target`` and returns the parameters of the best (or the last) check; its history
goes to ``stats["validation"]``, with ``selected_step`` and ``stopped_at``. The signal is one the
user has at deletion time (``holdout_gap``: forget NLL against held-out text's), never the retain
model.

The compiled steps are cached per model function and setting: a second request of the same
shapes and hyper-parameters does not compile again.

Sharding: pass parameters placed on a mesh (``jaxunlearn.lm.sharding.shard_params``, FSDP-style)
and ``batch_sharding`` (``sharding.batch_sharding(mesh)``) for the minibatches; the jitted steps
follow those shardings and the optimizer state is sharded like the parameters. ``batch_size`` must
then divide over the batch axes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn._src import lm_data, lm_losses, lm_validation
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


@functools.lru_cache(maxsize=64)
def _in_dtype(fn, dtype):
  """``fn`` computing with its floating parameters cast to ``dtype`` (mixed precision: the master
  parameters, the gradients and the optimizer state stay in their own dtype; the cast is
  differentiated through). ``dtype=None``: ``fn`` itself."""
  if dtype is None:
    return fn

  def cast(params, ids):
    low = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
    return fn(low, ids)

  return cast


@functools.lru_cache(maxsize=64)
def _optimizer(direction: tuple, learning_rate: float, weight_decay: float, steps: int,
               accumulate: int = 1) -> optax.GradientTransformation:
  """The method's direction (``("ascent",)``, ``("difference", w_f, w_r)`` or ``()``) chained with
  ``_schedule``; one object per distinct setting, so that the jitted steps (cached by the
  optimizer's identity) compile once and serve every later request of the same shapes."""
  schedule = _schedule(learning_rate, weight_decay, steps, accumulate)
  if not direction:
    return schedule
  if direction[0] == "ascent":
    return optax.chain(_ascent_tx(), schedule)
  return optax.chain(_difference_tx(forget_weight=direction[1], retain_weight=direction[2]), schedule)


def _schedule(learning_rate: float, weight_decay: float, steps: int, accumulate: int = 1) -> optax.GradientTransformation:
  """AdamW with a learning rate decaying linearly to 0 over the optimizer's updates; with
  ``accumulate`` > 1 the updates are averaged over that many consecutive minibatches first
  (``optax.MultiSteps``: one optimizer update per ``accumulate`` minibatches, zero in between)."""
  _check_accumulate(accumulate)
  updates = max(steps // accumulate, 1)
  return _accumulated(optax.adamw(optax.linear_schedule(learning_rate, 0.0, updates), weight_decay=weight_decay),
                      accumulate)


def _check_accumulate(accumulate) -> None:
  if not isinstance(accumulate, (int, np.integer)) or accumulate < 1:
    raise ValueError(f"accumulate must be a positive integer, got {accumulate!r}.")


def _accumulated(optimizer: optax.GradientTransformation, accumulate: int) -> optax.GradientTransformation:
  """``optimizer`` updating once per ``accumulate`` minibatches on their averaged updates
  (``optax.MultiSteps``), or ``optimizer`` itself for 1."""
  _check_accumulate(accumulate)
  if accumulate == 1:
    return optimizer
  return optax.MultiSteps(optimizer, every_k_schedule=int(accumulate)).gradient_transformation()


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


def _device(b, sharding=None):
  if b is None:
    return None
  if sharding is None:
    return {k: jnp.asarray(v) for k, v in b.items()}
  return {k: jax.device_put(np.asarray(v), sharding) for k, v in b.items()}


def _drive(advance, params, state, forget, retain, *, epochs, batch_size, seed, progress, stats, forget_passes=1,
           retain_passes=1, batch_sharding=None, validation=None, **extra_stats):
  """Runs ``advance(params, state, forget minibatch, retain minibatch or None)`` over the epochs;
  counts the tokens through the model (``*_passes`` forward-backward passes per batch), reports
  ``progress(step, steps)`` and fills ``stats``. A ``Validation`` is checked on the starting
  model, every ``validation.every`` steps and after the last; it may stop the run early and
  chooses the parameters returned."""
  steps = epochs * -(-len(forget["input_ids"]) // batch_size)
  if validation is not None and not isinstance(validation, lm_validation.Validation):
    raise TypeError(f"validation must be a jaxunlearn.lm.recipes.Validation, got {type(validation).__name__}.")
  monitor = None if validation is None else lm_validation.Monitor(validation)
  stopped = monitor is not None and monitor.check(0, params)
  tokens, done = 0, 0
  for i, (fb, rb) in enumerate(_epochs(forget, retain, epochs=epochs, batch_size=batch_size, seed=seed)):
    if stopped:
      break
    params, state = advance(params, state, _device(fb, batch_sharding), _device(rb, batch_sharding))
    tokens += forget_passes * _tokens(fb) + (0 if rb is None else retain_passes * _tokens(rb))
    done = i + 1
    if progress is not None:
      progress(done, steps)
    if monitor is not None and (done % validation.every == 0 or done == steps):
      stopped = monitor.check(done, params)
  params = jax.block_until_ready(params)
  extra = {}
  if monitor is not None:
    params, extra = monitor.result()
  if stats is not None:
    stats.update(steps=done, tokens=tokens, **extra_stats, **extra)
  return params


def gradient_ascent(lm: Any, params: Any, *, forget: Batch, retain: Batch | None = None, seed: int = 0,
                    epochs: int = 10, batch_size: int = 32, learning_rate: float = 2e-4, weight_decay: float = 0.01,
                    accumulate: int = 1, compute_dtype: Any = None, progress: Callable[[int, int], None] | None = None, batch_sharding: Any = None, validation: Any = None, stats: dict | None = None) -> Any:
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
  tx = _optimizer(("ascent",), float(learning_rate), float(weight_decay), steps, accumulate)
  step = _ascent_step(_in_dtype(lm.logits_fn, compute_dtype), tx)
  return _drive(lambda p, st, fb, rb: step(p, st, fb), params, tx.init(params), forget, None, epochs=epochs,
                batch_size=batch_size, seed=seed, progress=progress, stats=stats, batch_sharding=batch_sharding, validation=validation)


def gradient_difference(lm: Any, params: Any, *, forget: Batch, retain: Batch, seed: int = 0, epochs: int = 10,
                        batch_size: int = 32, learning_rate: float = 3e-4, weight_decay: float = 0.01,
                        retain_loss: str = "nll", forget_weight: float = 1.0, retain_weight: float = 3.0,
                        accumulate: int = 1, compute_dtype: Any = None, progress: Callable[[int, int], None] | None = None, batch_sharding: Any = None, validation: Any = None, stats: dict | None = None) -> Any:
  r"""Gradient difference (TOFU's GradDiff): ascend the forget NLL while descending a retain term,
  :math:`u = w_r \nabla R - w_f \nabla \mathrm{NLL}_{\mathrm{forget}}` (``gradient_difference``)
  then AdamW. :math:`R` is the retain NLL (``retain_loss="nll"``) or the KL from the starting
  model's predictions (``"kl"``: :math:`\mathrm{KL}(p_{\theta_0} \| p_\theta)` over every position
  of the retain batch, open-unlearning's ``retain_loss_type=KL``).

  Defaults: ``retain_weight`` 3 and learning rate 3e-4, measured on this package's benchmark
  (forget10: forget quality 0.24 at model utility 1.03x the target's, against 0.33 at 0.87x with
  open-unlearning's weight 1 and 2e-4); ``forget_weight`` 1 as open-unlearning's."""
  if retain_loss not in ("nll", "kl"):
    raise ValueError(f"retain_loss must be 'nll' or 'kl', got {retain_loss!r}.")
  forget, retain = _check(forget, "forget"), _check(retain, "retain")
  steps = epochs * -(-len(forget["input_ids"]) // batch_size)
  tx = _optimizer(("difference", float(forget_weight), float(retain_weight)), float(learning_rate), float(weight_decay), steps,
                  accumulate)
  step = _difference_step(_in_dtype(lm.logits_fn, compute_dtype), tx, retain_loss)
  ref = params
  return _drive(lambda p, st, fb, rb: step(p, st, ref, fb, rb), params, tx.init(params), forget, retain,
                epochs=epochs, batch_size=batch_size, seed=seed, progress=progress, stats=stats, batch_sharding=batch_sharding, validation=validation,
                retain_passes=2 if retain_loss == "kl" else 1)


# -- losses with a reference model (NPO, SimNPO, IdkDPO, UNDIAL) -----------------------------------
def _row_mean(per_row: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean over the rows that have a scored label (the filler rows of a last batch count for nothing)."""
  valid = (lm_losses.token_counts(labels) > 0).astype(jnp.float32)
  return jnp.sum(per_row * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def _forget_term(method: str, logits_fn, params, fb, hyper: dict):
  beta = hyper["beta"]
  if method == "npo":  # -(2/beta) log sigmoid(-beta (log pi - log pi_ref)), reference NLL precomputed
    log_ratio = fb["ref_nll"] - lm_losses.sequence_nll(logits_fn(params, fb["input_ids"]), fb["labels"])
    return _row_mean(-(2.0 / beta) * jax.nn.log_sigmoid(-beta * log_ratio), fb["labels"])
  if method == "simnpo":
    per_token = (lm_losses.sequence_nll(logits_fn(params, fb["input_ids"]), fb["labels"])
                 / jnp.maximum(lm_losses.token_counts(fb["labels"]), 1))
    return _row_mean(-(2.0 / beta) * jax.nn.log_sigmoid(beta * (per_token - hyper["delta"])), fb["labels"])
  if method == "idkdpo":  # win: a refusal; lose: the true answer
    win = fb["ref_win_nll"] - lm_losses.sequence_nll(logits_fn(params, fb["win_input_ids"]), fb["win_labels"])
    lose = fb["ref_nll"] - lm_losses.sequence_nll(logits_fn(params, fb["input_ids"]), fb["labels"])
    return _row_mean(-(2.0 / beta) * jax.nn.log_sigmoid(beta * (win - lose)), fb["labels"])
  if method == "undial":
    return lm_losses.undial(logits_fn(params, fb["input_ids"]), fb["ref_logits"], fb["labels"], beta=beta)
  raise ValueError(f"unknown method {method!r}")


@functools.lru_cache(maxsize=32)
def _reference_step(logits_fn, tx, method: str, hyper_items: tuple):
  hyper = dict(hyper_items)

  def loss(params, fb, rb):
    total = hyper["gamma"] * _forget_term(method, logits_fn, params, fb, hyper)
    if rb is not None and hyper["alpha"]:
      total = total + hyper["alpha"] * lm_losses.nll(logits_fn(params, rb["input_ids"]), rb["labels"])
    return total

  @jax.jit
  def step(params, state, fb, rb):
    updates, state = tx.update(jax.grad(loss)(params, fb, rb), state, params)
    return optax.apply_updates(params, updates), state

  return step


@functools.lru_cache(maxsize=16)
def _sequence_nll_fn(logits_fn):
  return jax.jit(lambda p, ids, labels: lm_losses.sequence_nll(logits_fn(p, ids), labels))


def _reference_quantities(logits_fn, params, batch: dict, *, full_logits: bool, chunk: int = 64) -> dict:
  """The frozen model's sequence NLLs (or full logits, for UNDIAL) on every row, computed once."""
  fn = lm_losses.jitted(logits_fn) if full_logits else _sequence_nll_fn(logits_fn)
  out = []
  for start in range(0, len(batch["input_ids"]), chunk):
    ids = jnp.asarray(batch["input_ids"][start:start + chunk])
    out.append(np.asarray(fn(params, ids) if full_logits else fn(params, ids, jnp.asarray(batch["labels"][start:start + chunk]))))
  return np.concatenate(out)


def _preference(method: str, lm, params, *, forget, retain, seed, epochs, batch_size, learning_rate, weight_decay,
                progress, stats, hyper: dict, idk=None, batch_sharding=None, accumulate=1, compute_dtype=None,
                validation=None):
  forget = _check(forget, "forget")
  retain = _check(retain, "retain") if retain is not None and hyper.get("alpha") else None
  t0_ref = time.perf_counter()
  if method in ("npo", "idkdpo"):
    forget["ref_nll"] = _reference_quantities(lm.logits_fn, params, forget, full_logits=False)
  if method == "idkdpo":
    idk = _check(idk, "idk")
    if len(idk["input_ids"]) != len(forget["input_ids"]):
      raise ValueError(f"idk must hold one refusal per forget row ({len(forget['input_ids'])}), got {len(idk['input_ids'])}.")
    forget["win_input_ids"], forget["win_labels"] = idk["input_ids"], idk["labels"]
    forget["ref_win_nll"] = _reference_quantities(lm.logits_fn, params, idk, full_logits=False)
  if method == "undial":
    forget["ref_logits"] = _reference_quantities(lm.logits_fn, params, forget, full_logits=True)
  reference_seconds = time.perf_counter() - t0_ref
  steps = epochs * -(-len(forget["input_ids"]) // batch_size)
  tx = _optimizer((), float(learning_rate), float(weight_decay), steps, accumulate)
  step = _reference_step(_in_dtype(lm.logits_fn, compute_dtype), tx, method, tuple(sorted(hyper.items())))
  return _drive(step, params, tx.init(params), forget, retain, epochs=epochs, batch_size=batch_size, seed=seed,
                progress=progress, stats=stats, batch_sharding=batch_sharding, validation=validation, forget_passes=2 if method == "idkdpo" else 1,
                reference_seconds=reference_seconds)


def npo(lm: Any, params: Any, *, forget: Batch, retain: Batch | None, seed: int = 0, epochs: int = 10,
        batch_size: int = 32, learning_rate: float = 5e-4, weight_decay: float = 0.01, beta: float = 0.1,
        gamma: float = 1.0, alpha: float = 1.0, accumulate: int = 1, compute_dtype: Any = None, progress: Callable[[int, int], None] | None = None, batch_sharding: Any = None, validation: Any = None,
        stats: dict | None = None) -> Any:
  r"""Negative preference optimisation with a retain term (Zhang et al., COLM 2024; open-unlearning's NPO):

  .. math:: \mathcal L = \gamma\,\operatorname{mean}_b\Big[-\tfrac{2}{\beta}\log\sigma\big(-\beta\,
     (\log\pi_\theta(y_b|x_b) - \log\pi_{\mathrm{ref}}(y_b|x_b))\big)\Big] + \alpha\,\mathrm{NLL}_{\mathrm{retain}}

  then AdamW. The reference is the starting model; its sequence log-probabilities on the forget set
  are computed once, before training (``stats["reference_seconds"]``), not at every step. Defaults:
  open-unlearning's (beta 0.1, gamma = alpha = 1); learning rate 5e-4, measured on this package's
  benchmark (forget10: forget quality 0.82 at utility 0.6x the target's; 2e-4 gave 0.17).
  """
  return _preference("npo", lm, params, forget=forget, retain=retain, seed=seed, epochs=epochs, batch_size=batch_size,
                     learning_rate=learning_rate, weight_decay=weight_decay, progress=progress, stats=stats,
                     batch_sharding=batch_sharding, validation=validation, accumulate=accumulate, compute_dtype=compute_dtype, hyper={"beta": beta, "gamma": gamma, "alpha": alpha})


def simnpo(lm: Any, params: Any, *, forget: Batch, retain: Batch | None, seed: int = 0, epochs: int = 10,
           batch_size: int = 32, learning_rate: float = 2e-3, weight_decay: float = 0.01, beta: float = 4.5,
           delta: float = 0.0, gamma: float = 0.125, alpha: float = 1.0,
           accumulate: int = 1, compute_dtype: Any = None, progress: Callable[[int, int], None] | None = None, batch_sharding: Any = None, validation: Any = None, stats: dict | None = None) -> Any:
  r"""SimNPO (Fan et al., 2024): NPO without a reference model, on the length-normalised NLL,

  .. math:: \mathcal L = \gamma\,\operatorname{mean}_b\Big[-\tfrac{2}{\beta}\log\sigma\big(\beta\,
     (\mathrm{NLL}_b/|y_b| - \delta)\big)\Big] + \alpha\,\mathrm{NLL}_{\mathrm{retain}},

  then AdamW. Defaults: open-unlearning's (beta 4.5, delta 0, gamma 0.125, alpha 1); learning rate
  2e-3, measured on this package's benchmark (forget10: forget quality 0.12 at model utility 1.1x the
  target's; 5e-4 gave 0.008, 1e-3 0.054).
  """
  return _preference("simnpo", lm, params, forget=forget, retain=retain, seed=seed, epochs=epochs,
                     batch_size=batch_size, learning_rate=learning_rate, weight_decay=weight_decay, progress=progress,
                     stats=stats, batch_sharding=batch_sharding, validation=validation, accumulate=accumulate, compute_dtype=compute_dtype, hyper={"beta": beta, "delta": delta, "gamma": gamma, "alpha": alpha})


def idkdpo(lm: Any, params: Any, *, forget: Batch, retain: Batch | None, idk: Batch, seed: int = 0, epochs: int = 10,
           batch_size: int = 32, learning_rate: float = 2e-4, weight_decay: float = 0.01, beta: float = 0.1,
           gamma: float = 1.0, alpha: float = 1.0, accumulate: int = 1, compute_dtype: Any = None, progress: Callable[[int, int], None] | None = None, batch_sharding: Any = None, validation: Any = None,
           stats: dict | None = None) -> Any:
  r"""IdkDPO (TOFU; Rafailov et al.'s DPO with a refusal as the preferred answer): row :math:`b` of
  ``idk`` holds forget row :math:`b`'s question with a refusal (``jaxunlearn.lm.data.idk_batch``);

  .. math:: \mathcal L = \gamma\,\operatorname{mean}_b\Big[-\tfrac{2}{\beta}\log\sigma\big(\beta\,
     [r(\text{refusal}_b) - r(y_b)]\big)\Big] + \alpha\,\mathrm{NLL}_{\mathrm{retain}},\quad
     r = \log\pi_\theta - \log\pi_{\mathrm{ref}},

  the reference terms computed once. Defaults: open-unlearning's (beta 0.1, gamma = alpha = 1).
  """
  return _preference("idkdpo", lm, params, forget=forget, retain=retain, seed=seed, epochs=epochs,
                     batch_size=batch_size, learning_rate=learning_rate, weight_decay=weight_decay, progress=progress,
                     stats=stats, batch_sharding=batch_sharding, validation=validation, accumulate=accumulate, compute_dtype=compute_dtype, hyper={"beta": beta, "gamma": gamma, "alpha": alpha}, idk=idk)


def undial(lm: Any, params: Any, *, forget: Batch, retain: Batch | None = None, seed: int = 0, epochs: int = 10,
           batch_size: int = 32, learning_rate: float = 2e-4, weight_decay: float = 0.01, beta: float = 10.0,
           accumulate: int = 1, compute_dtype: Any = None, progress: Callable[[int, int], None] | None = None, batch_sharding: Any = None, validation: Any = None, stats: dict | None = None) -> Any:
  r"""UNDIAL (Dong et al., NAACL 2025): self-distillation towards the starting model's next-token
  distribution with the true token's logit lowered by :math:`\beta` (``jaxunlearn.lm.losses.undial``),
  then AdamW. No retain term (open-unlearning's default); the starting model's logits on the forget
  set are computed once. Default beta 10 (open-unlearning's).
  """
  del retain
  return _preference("undial", lm, params, forget=forget, retain=None, seed=seed, epochs=epochs,
                     batch_size=batch_size, learning_rate=learning_rate, weight_decay=weight_decay, progress=progress,
                     stats=stats, batch_sharding=batch_sharding, validation=validation, accumulate=accumulate, compute_dtype=compute_dtype, hyper={"beta": beta, "gamma": 1.0, "alpha": 0.0})
