r"""Language-model unlearning losses on arrays: logits ``[B, T, V]``, labels ``[B, T]``.

Labels follow the Hugging Face convention: aligned with ``input_ids`` (the losses shift them: the
logits at position :math:`t` predict the label at :math:`t + 1`), ``-100`` (``IGNORE``) for
tokens that are not scored (prompt, padding). Every function is jit-able, computes in float32 and
matches the definitions of open-unlearning (``src/trainer/utils.py``, ``src/trainer/unlearn``).

With :math:`\ell_{b,t} = -\log p_\theta(y_{b,t+1} \mid x_{b,\le t})` over the scored positions
:math:`S_b` of sequence :math:`b`:

- ``sequence_nll``: :math:`\mathrm{NLL}_b = \sum_{t \in S_b} \ell_{b,t}`, so
  :math:`\log \pi_\theta(y_b \mid x_b) = -\mathrm{NLL}_b`.
- ``nll``: :math:`\sum_b \mathrm{NLL}_b / \sum_b |S_b|` (Hugging Face's ``outputs.loss``).

References:
  Zhang et al., "Negative Preference Optimization", COLM 2024 (NPO).
  Rafailov et al., "Direct Preference Optimization", NeurIPS 2023 (DPO; IdkDPO in TOFU).
  Fan et al., "Simplicity Prevails: Rethinking Negative Preference Optimization", 2024 (SimNPO).
  Dong et al., "UNDIAL: Self-Distillation with Adjusted Logits", NAACL 2025.
  Li et al., "The WMDP Benchmark", ICML 2024 (RMU).
  Maini et al., "TOFU: A Task of Fictitious Unlearning", COLM 2024 (gradient ascent/difference).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

IGNORE = -100

Batch = dict[str, Any]
LogitsFn = Callable[[Any, jax.Array], jax.Array]


def _shifted(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(log-softmax of the predicting logits [B, T-1, V], safe next-token labels, scored mask)``."""
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  if logits.ndim != 3 or labels.shape != logits.shape[:2]:
    raise ValueError(f"logits must be [B, T, V] and labels [B, T]; got {logits.shape} and {labels.shape}.")
  target = labels[:, 1:]
  mask = target != IGNORE
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  return logp, jnp.where(mask, target, 0), mask


def token_logprobs(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(log p(next label) [B, T-1] (0 where not scored), scored mask [B, T-1])``."""
  logp, safe, mask = _shifted(logits, labels)
  tok = jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
  return jnp.where(mask, tok, 0.0), mask


def sequence_nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
  r"""Summed next-token NLL of each sequence over its scored labels: ``[B]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxunlearn.lm import losses
    >>> logits = jnp.zeros((1, 3, 4))  # uniform over 4 tokens
    >>> losses.sequence_nll(logits, jnp.array([[-100, 2, 3]]))  # two scored tokens: 2 log 4
    Array([2.7725887], dtype=float32)
  """
  tok, _ = token_logprobs(logits, labels)
  return -jnp.sum(tok, axis=-1)


def token_counts(labels: jax.Array) -> jax.Array:
  """Scored (next-token, not ignored) labels per sequence: ``[B]``."""
  return jnp.sum(jnp.asarray(labels)[:, 1:] != IGNORE, axis=-1)


def nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean next-token NLL over every scored token of the batch (Hugging Face's ``outputs.loss``)."""
  tok, mask = token_logprobs(logits, labels)
  return -jnp.sum(tok) / jnp.maximum(jnp.sum(mask), 1)


def npo(logits: jax.Array, ref_logits: jax.Array, labels: jax.Array, *, beta: float) -> jax.Array:
  r"""Negative preference optimisation on forget sequences:

  .. math:: -\frac{2}{\beta} \operatorname{mean}_b \log\sigma\big(-\beta\,(\log\pi_\theta(y_b|x_b) -
     \log\pi_{\mathrm{ref}}(y_b|x_b))\big)
  """
  log_ratio = sequence_nll(ref_logits, labels) - sequence_nll(logits, labels)
  return -(2.0 / beta) * jnp.mean(jax.nn.log_sigmoid(-beta * log_ratio))


def dpo(win_logits: jax.Array, win_ref_logits: jax.Array, win_labels: jax.Array, lose_logits: jax.Array,
        lose_ref_logits: jax.Array, lose_labels: jax.Array, *, beta: float) -> jax.Array:
  r"""Direct preference optimisation with the same :math:`2/\beta` scale as ``npo``:

  .. math:: -\frac{2}{\beta} \operatorname{mean}_b \log\sigma\big(\beta\,[r_\mathrm{win} -
     r_\mathrm{lose}]\big), \quad r = \log\pi_\theta(y|x) - \log\pi_{\mathrm{ref}}(y|x).
  """
  win = sequence_nll(win_ref_logits, win_labels) - sequence_nll(win_logits, win_labels)
  lose = sequence_nll(lose_ref_logits, lose_labels) - sequence_nll(lose_logits, lose_labels)
  return -(2.0 / beta) * jnp.mean(jax.nn.log_sigmoid(beta * (win - lose)))


def simnpo(logits: jax.Array, labels: jax.Array, *, beta: float, delta: float = 0.0) -> jax.Array:
  r"""SimNPO (no reference model): with :math:`|y_b|` the scored labels of sequence :math:`b`,

  .. math:: -\frac{2}{\beta} \operatorname{mean}_b \log\sigma\big(\beta\,(\mathrm{NLL}_b / |y_b| - \delta)\big).

  A sequence with no scored label contributes :math:`\mathrm{NLL} = 0`.
  """
  per_token = sequence_nll(logits, labels) / jnp.maximum(token_counts(labels), 1)
  return -(2.0 / beta) * jnp.mean(jax.nn.log_sigmoid(beta * (per_token - delta)))


def undial(logits: jax.Array, ref_logits: jax.Array, labels: jax.Array, *, beta: float) -> jax.Array:
  r"""UNDIAL: cross-entropy to the reference distribution with the true next token's logit lowered,

  .. math:: q_t = \operatorname{softmax}(z^{\mathrm{ref}}_t - \beta\,e_{y_{t+1}}), \qquad
     \mathcal L = \operatorname{mean}_{t \in S} \Big(-\sum_v q_{t,v} \log p_{\theta,t,v}\Big),

  averaged over the scored positions only (ignored labels do not index the vocabulary).
  """
  logp, safe, mask = _shifted(logits, labels)
  ref = jnp.asarray(ref_logits)[:, :-1].astype(jnp.float32)
  q = jax.nn.softmax(ref - beta * jax.nn.one_hot(safe, ref.shape[-1], dtype=jnp.float32), axis=-1)
  ce = -jnp.sum(q * logp, axis=-1)
  return jnp.sum(jnp.where(mask, ce, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def kl_to_reference(logits: jax.Array, ref_logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  r"""KL(reference || model) summed over the vocabulary, averaged over positions:

  .. math:: \operatorname{mean}_{(b,t)} \sum_v p^{\mathrm{ref}}_{b,t,v}\,(\log p^{\mathrm{ref}}_{b,t,v} -
     \log p_{\theta,b,t,v}).

  ``mask`` ``[B, T]`` (1 = counted) selects the positions; ``None`` counts all :math:`B T` of them,
  as open-unlearning's KL retain term does (``kl_div(..., reduction="batchmean")``).
  """
  logp = jax.nn.log_softmax(jnp.asarray(logits).astype(jnp.float32), axis=-1)
  ref = jax.nn.log_softmax(jnp.asarray(ref_logits).astype(jnp.float32), axis=-1)
  kl = jnp.sum(jnp.exp(ref) * (ref - logp), axis=-1)
  if mask is None:
    return jnp.mean(kl)
  mask = jnp.asarray(mask).astype(jnp.float32)
  return jnp.sum(kl * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def rmu_activation_loss(acts: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  r"""RMU's masked activation MSE: acts ``[B, T, D]``, target broadcastable to it (a control
  vector ``[D]`` or frozen activations), mask ``[B, T]``:

  .. math:: \operatorname{mean}_b \frac{\sum_t m_{b,t}\,\operatorname{mean}_d (a_{b,t,d} -
     u_{b,t,d})^2}{\sum_t m_{b,t}}.
  """
  acts = jnp.asarray(acts).astype(jnp.float32)
  target = jnp.broadcast_to(jnp.asarray(target, jnp.float32), acts.shape)
  sq = jnp.mean(jnp.square(acts - target), axis=-1)
  mask = jnp.asarray(mask).astype(jnp.float32)
  return jnp.mean(jnp.sum(sq * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0))


# -- loss builders for optax loops: loss(params, batch) ---------------------------------------------
def nll_loss(logits_fn: LogitsFn) -> Callable[[Any, Batch], jax.Array]:
  """``loss(params, batch)``: ``nll`` of ``logits_fn(params, batch["input_ids"])`` on
  ``batch["labels"]``. Descend it to learn, or use it with ``jaxunlearn.gradient_ascent`` to
  forget (gradient ascent) and as either term of ``jaxunlearn.gradient_difference``."""

  def loss(params, batch: Batch) -> jax.Array:
    return nll(logits_fn(params, batch["input_ids"]), batch["labels"])

  return loss


def kl_loss(logits_fn: LogitsFn) -> Callable[[Any, Batch], jax.Array]:
  """``loss(params, batch)``: ``kl_to_reference`` of the model against ``batch["ref_logits"]``
  (the reference model's logits, computed once: ``with_reference_logits``), over every position
  (``mask=None``, as open-unlearning's KL retain term)."""

  def loss(params, batch: Batch) -> jax.Array:
    return kl_to_reference(logits_fn(params, batch["input_ids"]), batch["ref_logits"])

  return loss


@functools.lru_cache(maxsize=16)
def jitted(logits_fn: LogitsFn):
  """``jax.jit(logits_fn)``, one per function (shared so that it compiles once)."""
  return jax.jit(logits_fn)


def with_reference_logits(logits_fn: LogitsFn, ref_params: Any, batch: Batch) -> Batch:
  """``batch`` plus ``"ref_logits"``: the reference model's logits on ``batch["input_ids"]``
  (computed once, outside the training step)."""
  ref = jax.lax.stop_gradient(jitted(logits_fn)(ref_params, jnp.asarray(batch["input_ids"])))
  return {**batch, "ref_logits": ref}
