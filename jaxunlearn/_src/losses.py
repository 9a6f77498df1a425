"""Forget and retain objectives as loss builders: ``make(apply) -> loss(params, batch)``.

A batch is a mapping with ``"x"`` (inputs), ``"y"`` (integer labels) and optionally ``"mask"``
(0/1 example weights for padded batches) and ``"ids"`` (stable example ids). Every loss is the
mask-weighted mean over the batch of a per-example loss, so a padded batch gives the same value as
the unpadded one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn._src.base import ApplyFn, Batch, LossFn, Params, PRNGKey, is_concrete


def masked_mean(values: jax.Array, batch: Batch) -> jax.Array:
  """Mean of per-example ``values`` weighted by ``batch["mask"]`` (plain mean without a mask)."""
  mask = batch.get("mask") if hasattr(batch, "get") else None
  if mask is None:
    return jnp.mean(values)
  mask = mask.astype(values.dtype)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1)


def _checked_labels(y: jax.Array, num_classes: int, batch: Batch) -> jax.Array:
  """``y`` as int32 after checking it against the model's ``num_classes`` outputs.

  Concrete labels out of ``[0, num_classes)`` raise ``ValueError`` (the bad values named). Traced
  ones cannot raise: the returned labels are then poisoned so that such an example's loss *and its
  gradient* are NaN (a gather out of range would give a NaN loss but a zero gradient: a silently
  all-zero Fisher). Examples with ``mask`` 0 (padding) are not checked.
  """
  y = jnp.asarray(y)
  if not jnp.issubdtype(y.dtype, jnp.integer):
    raise ValueError(f"labels must be integers, got dtype {y.dtype}.")
  mask = batch.get("mask") if hasattr(batch, "get") else None
  if is_concrete((y, mask)):
    yy = np.asarray(y)
    live = np.ones(yy.shape, bool) if mask is None else np.asarray(mask) != 0
    bad = np.unique(yy[live & ((yy < 0) | (yy >= num_classes))])
    if bad.size:
      raise ValueError(f"labels {bad[:10].tolist()} are out of range for a model with {num_classes} outputs "
                       f"(classes 0..{num_classes - 1}).")
  return y.astype(jnp.int32)


def _label_nll(logp: jax.Array, y: jax.Array, batch: Batch) -> jax.Array:
  """Per-example ``-logp[y]``; NaN, with NaN gradient, for a live example whose label is out of range."""
  num_classes = logp.shape[-1]
  y = _checked_labels(y, num_classes, batch)
  mask = batch.get("mask") if hasattr(batch, "get") else None
  bad = (y < 0) | (y >= num_classes)
  if mask is not None:
    bad = bad & (mask != 0)
  nll = -jnp.take_along_axis(logp, jnp.clip(y, 0, num_classes - 1)[:, None], axis=-1)[:, 0]
  # A factor 1 leaves a valid example's loss and gradient bit for bit; NaN poisons both.
  return nll * jnp.where(bad, jnp.nan, 1.0).astype(nll.dtype)


def _log_softmax(apply_fn: ApplyFn, params: Params, x: jax.Array) -> jax.Array:
  logits = apply_fn(params, x)
  return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def cross_entropy_loss(apply_fn: ApplyFn) -> LossFn:
  r"""Softmax cross-entropy with the batch's labels.

  .. math:: \ell(\theta; x, y) = -\log \mathrm{softmax}(f_\theta(x))_y

  Used descending on the retain set, or ascending on the forget set (``gradient_ascent``).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxunlearn import losses
    >>> apply = lambda p, x: x @ p
    >>> loss = losses.cross_entropy_loss(apply)
    >>> float(loss(jnp.zeros((3, 4)), {"x": jnp.ones((2, 3)), "y": jnp.array([0, 1])}))  # log(4)
    1.38...
  """

  def loss(params: Params, batch: Batch) -> jax.Array:
    logp = _log_softmax(apply_fn, params, batch["x"])
    return masked_mean(_label_nll(logp, batch["y"], batch), batch)

  return loss


def random_label_loss(apply_fn: ApplyFn, num_classes: int, *, key: PRNGKey) -> LossFn:
  r"""Cross-entropy to a random *wrong* label per example (the "random labels" forgetting method).

  Each example's target is ``(y + 1 + u) mod C`` with ``u`` uniform in ``{0..C-2}``, drawn from
  ``fold_in(key, id)``, so it differs from the true label and is the same every time the example
  is seen. The batch must carry ``"ids"``.

  Args:
    apply_fn: ``apply(params, x) -> logits``.
    num_classes: number of classes ``C`` (>= 2).
    key: PRNG key from which the per-example random labels derive.
  """
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}.")

  def loss(params: Params, batch: Batch) -> jax.Array:
    if "ids" not in batch:
      raise ValueError("random_label_loss needs batch['ids'] (stable example ids) to draw labels from.")
    ids = batch["ids"].astype(jnp.uint32)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(ids)
    offset = jax.vmap(lambda k: jax.random.randint(k, (), 0, num_classes - 1))(keys)
    y = _checked_labels(batch["y"], num_classes, batch)
    target = (y + 1 + offset) % num_classes
    logp = _log_softmax(apply_fn, params, batch["x"])
    nll = -jnp.take_along_axis(logp, target[:, None], axis=-1)[:, 0]
    return masked_mean(nll, batch)

  return loss


def teacher_kl_loss(apply_fn: ApplyFn, teacher_params: Params, *, temperature: float = 1.0) -> LossFn:
  r"""KL divergence from a frozen teacher's softened predictions to the model's.

  .. math:: \ell = T^2\,\mathrm{KL}\big(\mathrm{softmax}(g(x)/T)\,\|\,\mathrm{softmax}(f_\theta(x)/T)\big)

  with teacher logits ``g = apply_fn(teacher_params, x)`` (no gradient flows to the teacher).
  Minimised on retain data it keeps the student close to the original (SCRUB's "min" step, with
  the cross-entropy); maximised on forget data it pushes the student away (SCRUB's "max" step;
  Kurmanji et al., NeurIPS 2023).
  """
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")

  def loss(params: Params, batch: Batch) -> jax.Array:
    teacher = apply_fn(teacher_params, batch["x"])
    return masked_mean(kl_to_teacher(teacher, apply_fn(params, batch["x"]), temperature), batch)

  return loss


def kl_to_teacher(teacher_logits: jax.Array, student_logits: jax.Array, temperature: float = 1.0) -> jax.Array:
  r"""Per-example :math:`T^2\,\mathrm{KL}(\mathrm{softmax}(t/T)\,\|\,\mathrm{softmax}(s/T))`
  (SCRUB's and Hinton et al.'s distillation divergence, the teacher's distribution first), in
  float32.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxunlearn import kl_to_teacher
    >>> float(kl_to_teacher(jnp.array([[0.0, 0.0]]), jnp.array([[0.0, 0.0]]))[0])
    0.0
  """
  t = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / temperature, axis=-1)
  s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  return jnp.sum(jnp.exp(t) * (t - s), axis=-1) * temperature ** 2



def uniform_kl_loss(apply_fn: ApplyFn) -> LossFn:
  r"""KL divergence from the uniform distribution to the model's prediction.

  .. math:: \ell = \mathrm{KL}(U\,\|\,p_\theta(\cdot|x)) = -\log C - \tfrac{1}{C}\sum_c \log p_\theta(c|x)

  Minimised on the forget set it drives predictions there to maximal uncertainty.
  """

  def loss(params: Params, batch: Batch) -> jax.Array:
    logp = _log_softmax(apply_fn, params, batch["x"])
    c = logp.shape[-1]
    kl = -jnp.log(jnp.float32(c)) - jnp.mean(logp, axis=-1)
    return masked_mean(kl, batch)

  return loss
