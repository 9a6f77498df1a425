r"""Validation while unlearning a language model: stop early, or pick the checkpoint, on a signal
the user has at deletion time.

What a user holds when a deletion request arrives: the model, the forget set, the retain data,
and text the model never saw (a held-out split, or fresh text of the same kind as the forget
set). What they do not hold is the model retrained without the forget set, so no selection rule
here uses it. The signals offered:

- ``holdout_gap``: :math:`|\overline{\mathrm{NLL}}_\mathrm{forget} - \overline{\mathrm{NLL}}_\mathrm{holdout}|`,
  the gap between the mean per-token NLL of the forget answers and of held-out answers under the
  current model: a model that has forgotten treats the forget set like unseen text (SCRUB+R's
  rewinding rule, Kurmanji et al. 2023, applied to token likelihoods).
- ``memorization`` / ``extraction_likelihood``: Jang et al.'s MA and EL_n of a batch, the two
  numbers of knowledge unlearning's stopping rule (``jaxunlearn.lm.recipes.knowledge_unlearning``).

A ``Validation`` passed to any recipe of ``jaxunlearn.lm.recipes`` evaluates its signal on the
starting model, every ``every`` minibatches and after the last one; it stops at the first check
at or below ``target`` and returns the parameters of the best check (``select="best"``) or of the last
one (``select="last"``). ``stats["validation"]`` receives the history.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn._src import lm_eval, lm_losses, lm_models

GENERATION_CHUNK = 256  # prefixes per compiled generation


@dataclasses.dataclass(frozen=True)
class Validation:
  """A validation signal checked while a recipe trains.

  Attributes:
    signal: ``signal(params) -> float``, lower is better (e.g. ``holdout_gap(lm, forget, holdout)``).
    every: minibatches between checks (the starting model and the last minibatch are checked too).
    target: stop at the first check whose value is at or below it (``None``: never stop early).
    select: ``"best"`` returns the parameters of the check with the lowest value (the earliest of
      equal ones; the starting model is a candidate), ``"last"`` those of the last check.

  Example:
    >>> from jaxunlearn.lm import data, models, recipes
    >>> lm = models.create(models.DecoderConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64))
    >>> forget = data.qa_batch(["Who?"] * 4, ["Me."] * 4, length=32)
    >>> holdout = data.qa_batch(["Why?"] * 4, ["No."] * 4, length=32)
    >>> check = recipes.Validation(recipes.holdout_gap(lm, forget, holdout), every=1)
    >>> stats = {}
    >>> new = recipes.gradient_ascent(lm, lm.params, forget=forget, epochs=3, batch_size=4, validation=check,
    ...                               stats=stats)
    >>> len(stats["validation"])  # the start and after each of the 3 steps
    4
  """

  signal: Callable[[Any], float]
  every: int = 10
  target: float | None = None
  select: str = "best"

  def __post_init__(self):
    if not callable(self.signal):
      raise TypeError(f"Validation.signal must be callable (params -> float), got {type(self.signal).__name__}.")
    if not isinstance(self.every, (int, np.integer)) or self.every < 1:
      raise ValueError(f"Validation.every must be a positive integer, got {self.every!r}.")
    if self.select not in ("best", "last"):
      raise ValueError(f"Validation.select must be 'best' or 'last', got {self.select!r}.")


class Monitor:
  """The recipes' side of a ``Validation``: ``check(step, params) -> stop?`` and ``result()``."""

  def __init__(self, validation: Validation):
    self.validation = validation
    self.history: list[dict] = []
    self.best: tuple[float, int, Any] | None = None
    self.last: tuple[int, Any] | None = None
    self.stopped_at: int | None = None

  def check(self, step: int, params) -> bool:
    value = float(self.validation.signal(params))
    if not np.isfinite(value):
      raise ValueError(f"the validation signal is {value} at step {step}: it must be a finite number.")
    self.history.append({"step": int(step), "value": value})
    self.last = (step, params)
    if self.best is None or value < self.best[0]:
      self.best = (value, step, params)
    target = self.validation.target
    if target is not None and value <= target:
      self.stopped_at = int(step)
      return True
    return False

  def result(self) -> tuple[Any, dict]:
    step, params = (self.best[1], self.best[2]) if self.validation.select == "best" else self.last
    return params, {"validation": self.history, "selected_step": int(step), "stopped_at": self.stopped_at}


# -- signals -------------------------------------------------------------------------------------
def mean_token_nll(logits_fn, params, batch: dict) -> float:
  """Mean over the rows with scored labels of each row's per-token NLL (its answer's average)."""
  scored = lm_eval.score_batch(logits_fn, params, batch)
  return float(np.mean(scored["avg_nll"][scored["mask"].sum(1) > 0]))


def holdout_gap(lm: Any, forget: dict, holdout: dict) -> Callable[[Any], float]:
  r"""``signal(params)`` = :math:`|\overline{\mathrm{NLL}}_\mathrm{forget} -
  \overline{\mathrm{NLL}}_\mathrm{holdout}|` under ``params``: the mean per-token NLL of the forget
  rows against that of held-out rows the model never trained on (both re-evaluated at every
  check). Zero when the model finds the forget set exactly as unlikely as unseen text; gradient
  ascent drives the forget NLL past the holdout's, so the gap falls, then grows again. With
  ``Validation(select="best")`` this picks the checkpoint closest to "never seen"."""
  for name, b in (("forget", forget), ("holdout", holdout)):
    if not isinstance(b, dict) or "input_ids" not in b or "labels" not in b:
      raise ValueError(f"holdout_gap: {name} must be a batch with input_ids and labels.")
    if not np.any(np.asarray(b["labels"])[:, 1:] != lm_losses.IGNORE):
      raise ValueError(f"holdout_gap: {name} has no scored labels.")
  fb = {k: np.asarray(forget[k]) for k in ("input_ids", "labels")}
  hb = {k: np.asarray(holdout[k]) for k in ("input_ids", "labels")}

  def signal(params) -> float:
    return abs(mean_token_nll(lm.logits_fn, params, fb) - mean_token_nll(lm.logits_fn, params, hb))

  return signal


def memorization(lm: Any, params, batch: dict) -> np.ndarray:
  """Jang et al.'s memorisation accuracy per row: the fraction of its scored next tokens that the
  greedy (teacher-forced argmax) prediction gets right (``jaxunlearn.lm.metrics.memorization_accuracy``
  computed in compiled chunks). Rows without scored labels are NaN."""
  scored = lm_eval.score_batch(lm.logits_fn, params, batch)
  count = scored["mask"].sum(1)
  return np.where(count > 0, scored["hits"].sum(1) / np.maximum(count, 1), np.nan)


def _prefixes(batch: dict, n: int, name: str = "batch") -> list[tuple[np.ndarray, int, int] | None]:
  """Per row ``(x, start, stop)`` (``None`` if it scores nothing): the sequence ``x`` up to its
  last scored token (padding after it is never part of it, with or without an attention mask),
  and the prefix lengths ``i`` from the first scored position ``s`` to ``len(x) - n`` (so that
  ``x[i:]`` holds an n-gram)."""
  ids, labels = np.asarray(batch["input_ids"]), np.asarray(batch["labels"])
  mask = batch.get("attention_mask")
  rows = []
  for r in range(len(ids)):
    scored = np.flatnonzero(labels[r, 1:] != lm_losses.IGNORE) + 1
    if scored.size == 0:
      rows.append(None)
      continue
    start, length = int(scored[0]), int(scored[-1]) + 1
    if mask is not None and not np.all(np.asarray(mask)[r, :length] == 1):
      raise ValueError(f"extraction likelihood needs right-padded rows; {name} row {r}'s attention mask is 0 before "
                       "its last scored token.")
    stop = length - n
    if stop < start:
      raise ValueError(f"{name} row {r} scores {length - start} tokens, fewer than n + 1 = {n + 1}: it has no {n}-gram "
                       "beyond its first prefix.")
    rows.append((ids[r, :length], start, stop))
  return rows


def _ngram_overlap(generated: np.ndarray, reference: np.ndarray, n: int) -> float:
  have = {tuple(generated[j:j + n]) for j in range(len(generated) - n + 1)}
  ref = [tuple(reference[j:j + n]) for j in range(len(reference) - n + 1)]
  return sum(g in have for g in ref) / len(ref)


@functools.lru_cache(maxsize=8)
def _causal_fill(logits_fn, first: int):
  """Greedy continuation of right-aligned prefixes in one buffer, for any causal ``logits_fn``:
  ``buf[r, t]`` for ``t >= start[r]`` becomes the argmax at ``t - 1`` (causality keeps the logits at
  ``t - 1`` independent of the slots from ``t`` on), one full forward pass per position."""

  @jax.jit
  def fill(params, buf, start):
    def body(t, buf):
      nxt = jnp.argmax(logits_fn(params, buf)[:, t - 1], axis=-1).astype(buf.dtype)
      return buf.at[:, t].set(jnp.where(t >= start, nxt, buf[:, t]))

    return jax.lax.fori_loop(first, buf.shape[1], body, buf)

  return fill


def _round_up(x: int, multiple: int = 16) -> int:
  return -(-x // multiple) * multiple


def _continuations(lm: Any, params, prompts: list[np.ndarray], totals: list[int]) -> list[np.ndarray]:
  """Greedy continuation of every prompt to its ``total`` tokens (never stopped at EOS): the
  reference decoder's KV cache when ``lm`` is one, else one full forward pass per position of
  ``lm.logits_fn``. Prompts are sorted by how many tokens they need and chunked; each chunk's
  shapes (rows, prompt width, new tokens) are rounded up (rows repeated, widths to multiples of
  16), so that a batch compiles a few programs and no chunk generates far more than it needs."""
  cached = isinstance(lm, lm_models.LM) and lm.graphdef is not None
  need = np.array([t - len(p) for p, t in zip(prompts, totals)])
  order = np.argsort(need, kind="stable")
  chunk = min(GENERATION_CHUNK, len(prompts))
  out: list[np.ndarray | None] = [None] * len(prompts)
  for at in range(0, len(prompts), chunk):
    rows = list(order[at:at + chunk])
    real = len(rows)
    rows += [rows[-1]] * (chunk - real)
    if cached:
      width = _round_up(max(len(prompts[r]) for r in rows))
      new_tokens = _round_up(int(max(need[r] for r in rows)))
      ids = np.zeros((chunk, width), np.int32)
      mask = np.zeros((chunk, width), np.int32)
      for j, r in enumerate(rows):  # left-padded: the model's positions count real tokens only
        ids[j, width - len(prompts[r]):], mask[j, width - len(prompts[r]):] = prompts[r], 1
      new = np.asarray(lm_models.generate(lm, params, ids, mask, max_new_tokens=new_tokens, eos_id=-1))
      for j, r in enumerate(rows[:real]):
        out[r] = np.concatenate([prompts[r], new[j, :need[r]]])
    else:
      longest = _round_up(max(totals[r] for r in rows))
      first = max(1, min(len(prompts[r]) for r in rows) // 16 * 16)  # earlier is harmless: prompts are kept
      buf = np.zeros((chunk, longest), np.int32)
      start = np.array([len(prompts[r]) for r in rows], np.int32)
      for j, r in enumerate(rows):
        buf[j, :len(prompts[r])] = prompts[r]
      filled = np.asarray(_causal_fill(lm.logits_fn, first)(params, jnp.asarray(buf), jnp.asarray(start)))
      for j, r in enumerate(rows[:real]):
        out[r] = filled[j, :totals[r]]
  return out


def extraction_likelihood(lm: Any, params, batch: dict, *, n: int = 10) -> np.ndarray:
  r"""Jang et al.'s :math:`\mathrm{EL}_n` per row of a right-padded batch, batched and jitted:

  .. math:: \mathrm{EL}_n(x) = \frac{1}{|I|}\sum_{i \in I}
     \mathrm{overlap}_n\big(f(x_{<i}),\, x_{\ge i}\big), \quad I = \{s, \dots, L - n\},

  :math:`L` the row's length up to its last scored token, :math:`s` its first scored position (1 for ``text_batch`` rows, which
  is Jang et al.'s definition; the answer's first token for QA rows, so that the question is the
  fixed context), :math:`f(x_{<i})` the greedy continuation of the prefix to :math:`L - i` tokens
  and :math:`\mathrm{overlap}_n(a, b)` the fraction of :math:`b`'s n-grams found among :math:`a`'s.
  Equals ``jaxunlearn.lm.metrics.extraction_likelihood`` on ``text_batch`` rows. Rows without
  scored labels are NaN."""
  rows = _prefixes(batch, n)
  prompts, owners = [], []
  for r, row in enumerate(rows):
    if row is not None:
      x, start, stop = row
      for i in range(start, stop + 1):
        prompts.append(x[:i])
        owners.append((r, i))
  generated = _continuations(lm, params, prompts, [len(rows[r][0]) for r, _ in owners]) if prompts else []
  sums = np.zeros(len(rows))
  for k, (r, i) in enumerate(owners):
    x = rows[r][0]
    sums[r] += _ngram_overlap(generated[k][i:], x[i:], n)
  return np.array([np.nan if row is None else sums[r] / (row[2] - row[1] + 1) for r, row in enumerate(rows)])
