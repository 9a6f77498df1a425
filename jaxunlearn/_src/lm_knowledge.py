r"""Knowledge unlearning (Jang et al., ACL 2023): gradient ascent on the target token sequences until
they are no more memorised than text the model never saw."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import optax

from jaxunlearn._src import lm_recipes, lm_validation
from jaxunlearn._src.ascent import gradient_ascent as _ascent_tx


class StoppingRuleWarning(UserWarning):
  """Knowledge unlearning ran out of epochs before its stopping rule held."""


def knowledge_unlearning(lm: Any, params: Any, *, forget: dict, retain: dict | None = None, holdout: dict,
                         seed: int = 0, epochs: int = 30, batch_size: int = 32, learning_rate: float = 5e-4,
                         b1: float = 0.9, b2: float = 0.98, n: int = 10, check_every: int | None = None,
                         accumulate: int = 1, compute_dtype: Any = None,
                         progress: Callable[[int, int], None] | None = None, batch_sharding: Any = None,
                         stats: dict | None = None) -> Any:
  r"""Knowledge unlearning (Jang et al., "Knowledge Unlearning for Mitigating Privacy Risks in
  Language Models", ACL 2023): gradient ascent on the forget sequences' next-token NLL,

  .. math:: \theta \leftarrow \mathrm{Adam}_{\beta_1, \beta_2}\big(-\nabla_\theta\,
     \mathrm{NLL}_\mathrm{forget}\big),

  with their stopping rule: stop as soon as the forget set's mean memorisation accuracy
  :math:`\mathrm{MA}` **and** mean extraction likelihood :math:`\mathrm{EL}_n` are both at or
  below their values on ``holdout`` (text the model never trained on), measured once on the starting
  model (Jang et al. took 0.2994 and 0.0499 for GPT-Neo from held-out data the same way). MA is
  the fraction of scored next tokens the greedy prediction gets right; :math:`\mathrm{EL}_n`
  (``jaxunlearn.lm.metrics.extraction_likelihood_batch``) how much of each suffix greedy generation
  from each prefix reproduces, in n-grams. The rule is checked on the starting model, every
  ``check_every`` minibatches (default: once per epoch) and after the last; EL (generation from
  every prefix, the costly part) only once MA is at or below its threshold. "At or below": a
  small model's EL_10 on unseen text is often exactly 0, which a strict rule could never reach.

  Defaults: Adam betas (0.9, 0.98), a constant learning rate, n = 10 (Jang et al.'s); learning
  rate 5e-4 rather than their 5e-5 (which they used on GPT-Neo 125M-2.7B), not swept: chosen for
  the package's small benchmark model, where the rule then holds after 6 minibatches on forget01
  (6 epochs) and on forget10 (2 epochs; ``benchmarks/results/lm.md``). ``epochs`` is a ceiling: if the rule has not held by then,
  ``StoppingRuleWarning`` says so and the last parameters are returned. ``retain`` is not used
  (the method has no retain term). ``stats`` receives the thresholds, each check's MA and EL
  (``validation``), ``stopped_at`` and ``steps``.

  Raises:
    ValueError: a row of ``forget`` or ``holdout`` scores no more than ``n`` tokens (it has no
      n-gram to extract).
  """
  del retain
  forget = lm_recipes._check(forget, "forget")
  holdout = lm_recipes._check(holdout, "holdout")
  for name, batch in (("forget", forget), ("holdout", holdout)):
    lm_validation._prefixes(batch, n, name=name)  # every row long enough for an n-gram: fail before training
  per_epoch = -(-len(forget["input_ids"]) // batch_size)
  thresholds = {"memorization": float(np.nanmean(lm_validation.memorization(lm, params, holdout))),
                "extraction_likelihood": float(np.nanmean(lm_validation.extraction_likelihood(lm, params, holdout, n=n)))}
  checks: list[dict] = []

  def rule(p) -> float:
    """At or below 0 once both numbers are at or below their thresholds (the larger margin)."""
    ma = float(np.nanmean(lm_validation.memorization(lm, p, forget)))
    margin, el = ma - thresholds["memorization"], None
    if margin <= 0:
      el = float(np.nanmean(lm_validation.extraction_likelihood(lm, p, forget, n=n)))
      margin = max(margin, el - thresholds["extraction_likelihood"])
    checks.append({"memorization": ma, "extraction_likelihood": el})
    return margin

  validation = lm_validation.Validation(rule, every=check_every or per_epoch, target=0.0, select="last")
  tx = _optimizer(float(learning_rate), float(b1), float(b2), accumulate)
  step = lm_recipes._ascent_step(lm_recipes._in_dtype(lm.logits_fn, compute_dtype), tx)
  inner: dict = {}
  out = lm_recipes._drive(lambda p, st, fb, rb: step(p, st, fb), params, tx.init(params), forget, None, epochs=epochs,
                          batch_size=batch_size, seed=seed, progress=progress, stats=inner,
                          batch_sharding=batch_sharding, validation=validation)
  history = [{**h, **c} for h, c in zip(inner["validation"], checks)]
  if inner["stopped_at"] is None:
    last = history[-1]
    warnings.warn(f"knowledge_unlearning: the stopping rule did not hold within {epochs} epochs (forget MA "
                  f"{last['memorization']:.3f} against the holdout's {thresholds['memorization']:.3f}); the last "
                  "parameters are returned. Raise epochs or the learning rate.", StoppingRuleWarning, stacklevel=2)
  if stats is not None:
    stats.update(inner, validation=history, thresholds=thresholds)
  return out


@functools.lru_cache(maxsize=32)
def _optimizer(learning_rate: float, b1: float, b2: float, accumulate: int) -> optax.GradientTransformation:
  """Ascent, then Adam at a constant rate (one object per setting: the jitted step compiles once)."""
  return optax.chain(_ascent_tx(), lm_recipes._accumulated(optax.adam(learning_rate, b1=b1, b2=b2), accumulate))
