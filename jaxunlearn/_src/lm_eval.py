"""Evaluating a language model on the generated benchmark: TOFU's and MUSE's numbers for one
model (``evaluate``), and the comparison with the retain model (``compare``)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn._src import lm_data, lm_losses, lm_metrics, lm_models, lm_world
from jaxunlearn._src import lm_tokenizer as tok

CHUNK = 64  # rows per compiled forward pass
MAX_NEW_TOKENS = 64


@functools.lru_cache(maxsize=8)
def _scorer(logits_fn):
  @jax.jit
  def score(params, input_ids, labels):
    logits = logits_fn(params, input_ids)
    lp, mask = lm_losses.token_logprobs(logits, labels)
    hits = (jnp.argmax(logits[:, :-1], axis=-1) == labels[:, 1:]) & mask
    return lp, mask, hits

  return score


def score_answers(logits_fn, params, questions: Sequence[str], answers: Sequence[str]) -> dict[str, np.ndarray]:
  """Teacher-forced pass over ``questions``/``answers`` in fixed-size chunks: per row the answer's
  average NLL (``avg_nll``), token log-probs and mask (``[N, T-1]``) and argmax hits."""
  length = lm_data.length_for(questions, answers)
  return score_batch(logits_fn, params, lm_data.qa_batch(questions, answers, length=length))


def score_batch(logits_fn, params, batch: dict) -> dict[str, np.ndarray]:
  """``score_answers`` on a batch (``input_ids``, ``labels``): one compiled program of ``CHUNK``
  rows (the last chunk repeats its final row)."""
  n = len(batch["input_ids"])
  score = _scorer(logits_fn)
  parts = []
  for start in range(0, n, CHUNK):
    rows = np.arange(start, min(start + CHUNK, n))
    rows = np.concatenate([rows, np.full(CHUNK - len(rows), rows[-1])])  # fixed shape: repeat the last row
    lp, mask, hits = score(params, jnp.asarray(np.asarray(batch["input_ids"])[rows]),
                           jnp.asarray(np.asarray(batch["labels"])[rows]))
    parts.append([np.asarray(x) for x in (lp, mask, hits)])
  lp, mask, hits = (np.concatenate([p[i] for p in parts])[:n] for i in range(3))
  count = mask.sum(1)
  return {"avg_nll": -(lp.sum(1)) / np.maximum(count, 1), "logprobs": lp, "mask": mask, "hits": hits}


def generations(lm: lm_models.LM, params, questions: Sequence[str], *, max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
  """Greedy answers (KV cache), in chunks of ``CHUNK`` prompts padded to a common length."""
  ids, mask = lm_data.prompts(questions)
  out = []
  for start in range(0, len(questions), CHUNK):
    rows = np.arange(start, min(start + CHUNK, len(questions)))
    rows = np.concatenate([rows, np.full(CHUNK - len(rows), rows[-1])])
    toks = np.asarray(lm_models.generate(lm, params, ids[rows], mask[rows], max_new_tokens=max_new_tokens))
    out += [tok.decode(t) for t in toks]
  return out[: len(questions)]


def _truth_ratios(logits_fn, params, qa: Sequence[lm_world.QA], *, paraphrased: bool) -> np.ndarray:
  questions = [q.question for q in qa]
  correct = score_answers(logits_fn, params, questions, [q.paraphrased_answer if paraphrased else q.answer for q in qa])
  k = len(qa[0].perturbed)
  pert = score_answers(logits_fn, params, [q for q in questions for _ in range(k)], [p for q in qa for p in q.perturbed])
  return correct["avg_nll"], pert["avg_nll"].reshape(len(qa), k)


def evaluate(lm: lm_models.LM, params, world: lm_world.World, split: str, *, retain_eval: int = 4,
             progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
  """One model's numbers on ``split``: forget set (probability, truth ratios, ROUGE-L, exact
  memorisation, extraction strength, Min-K% scores), utility sets (the first ``retain_eval``
  retain authors, the famous authors, the place facts) and holdout Min-K% scores. Arrays are kept
  for ``compare``, which gives the scalars. ``progress(done, 6)`` after each of its six parts."""
  tick = (lambda done: None) if progress is None else (lambda done: progress(done, 6))
  f = world.qa(world.forget_authors(split))
  fn = lm.logits_fn
  out: dict[str, Any] = {}
  forget = score_answers(fn, params, [q.question for q in f], [q.answer for q in f])
  para, pert = _truth_ratios(fn, params, f, paraphrased=True)
  out["forget_tr"] = lm_metrics.truth_ratio(para, pert)
  out["forget_prob"] = float(np.mean(lm_metrics.probability(forget["avg_nll"])))
  em, es = lm_metrics.memorization_from_hits([h[m] for h, m in zip(forget["hits"], forget["mask"])])
  out["forget_exact_memorization"], out["extraction_strength"] = float(em.mean()), float(es.mean())
  out["forget_min_k"] = lm_metrics.min_k_scores(forget["logprobs"], forget["mask"], k=0.4)
  tick(1)
  hold = world.holdout_qa(split)
  held = score_answers(fn, params, [q.question for q in hold], [q.answer for q in hold])
  out["holdout_min_k"] = lm_metrics.min_k_scores(held["logprobs"], held["mask"], k=0.4)
  out["mia_auc"] = lm_metrics.mia_auc(out["forget_min_k"], out["holdout_min_k"])
  tick(2)

  sets = {"retain": world.qa(world.retain_authors(split)[:retain_eval]), "famous": list(world.famous),
          "facts": list(world.facts)}
  questions = [q.question for q in f] + [q.question for s in sets.values() for q in s]
  generated = generations(lm, params, questions)
  references = [q.answer for q in f] + [q.answer for s in sets.values() for q in s]
  rouge = lm_metrics.rouge_l_recall(generated, references)
  tick(3)
  out["forget_rouge"] = float(rouge[: len(f)].mean())
  out["samples"] = {"question": f[0].question, "answer": f[0].answer, "generated": generated[0]}
  at = len(f)
  utility = []
  for name, qa in sets.items():
    correct, perturbed = _truth_ratios(fn, params, qa, paraphrased=False)
    prob = (lm_metrics.probability(correct) if name == "retain"
            else lm_metrics.normalized_probability(correct, perturbed))
    tr = lm_metrics.truth_ratio_utility(lm_metrics.truth_ratio(correct, perturbed))
    r = float(rouge[at: at + len(qa)].mean())
    at += len(qa)
    out[f"{name}_prob"], out[f"{name}_rouge"], out[f"{name}_truth_ratio"] = float(np.mean(prob)), r, tr
    utility += [float(np.mean(prob)), r, tr]
    tick(3 + len(utility) // 3)
  out["model_utility"] = lm_metrics.model_utility(utility)
  return out


def compare(row: dict[str, Any], retain: dict[str, Any]) -> dict[str, Any]:
  """The scalars of ``row`` with forget quality and privleak against the retain model's ``retain``."""
  keys = ("model_utility", "forget_rouge", "forget_prob", "forget_exact_memorization", "extraction_strength",
          "mia_auc", "retain_prob", "retain_rouge", "retain_truth_ratio", "famous_prob", "famous_rouge",
          "famous_truth_ratio", "facts_prob", "facts_rouge", "facts_truth_ratio")
  out = {k: row[k] for k in keys}
  out["forget_quality"] = lm_metrics.forget_quality(row["forget_tr"], retain["forget_tr"])
  out["forget_truth_ratio"] = lm_metrics.truth_ratio_forget(row["forget_tr"])
  out["privleak"] = lm_metrics.privleak(row["mia_auc"], retain["mia_auc"])
  out["sample"] = row["samples"]
  return out


def relearn_steps(lm: lm_models.LM, params, world: lm_world.World, split: str, *, threshold: float,
                  max_steps: int = 40, check_every: int = 5, learning_rate: float = 1e-3, batch_size: int = 32,
                  seed: int = 0) -> int | None:
  """The relearning attack (removal or suppression?): fine-tune on the forget authors' first ten
  attributes (NLL, AdamW at a constant ``learning_rate``) and count the steps until the ROUGE-L
  recall of greedy answers to their *other* ten questions reaches ``threshold`` (checked every
  ``check_every`` steps); ``None`` if not within ``max_steps``. Knowledge that was removed has to be
  learned from nothing, and the other attributes are never shown; suppressed knowledge comes back.

  ``threshold``: e.g. 0.9 x the target model's ROUGE-L on those questions (``relearn_threshold``).
  """
  import optax

  shown, held = _relearn_split(world, split)
  batch = lm_data.qa_batch([q.question for q in shown], [q.answer for q in shown],
                           length=lm_data.length_for([q.question for q in shown], [q.answer for q in shown]))
  optimizer = optax.adamw(learning_rate)
  loss = lm_losses.nll_loss(lm.logits_fn)

  @jax.jit
  def step(p, state, b):
    updates, state = optimizer.update(jax.grad(loss)(p, b), state, p)
    return optax.apply_updates(p, updates), state

  def rouge(p) -> float:
    return float(lm_metrics.rouge_l_recall(generations(lm, p, [q.question for q in held]), [q.answer for q in held]).mean())

  if rouge(params) >= threshold:
    return 0
  state = optimizer.init(params)
  done, epoch = 0, 0
  while done < max_steps:
    for mb in lm_data.epoch_batches(batch, batch_size=batch_size, seed=seed, epoch=epoch):
      params, state = step(params, state, {k: jnp.asarray(v) for k, v in mb.items()})
      done += 1
      if done % check_every == 0 and rouge(params) >= threshold:
        return done
      if done >= max_steps:
        return None
    epoch += 1
  return None


def relearn_threshold(lm: lm_models.LM, target_params, world: lm_world.World, split: str, *, fraction: float = 0.9) -> float:
  """``fraction`` x the target model's ROUGE-L on the held-out half of the forget questions."""
  _, held = _relearn_split(world, split)
  return fraction * float(lm_metrics.rouge_l_recall(generations(lm, target_params, [q.question for q in held]),
                                                    [q.answer for q in held]).mean())


def _relearn_split(world: lm_world.World, split: str) -> tuple[list, list]:
  qa = world.qa(world.forget_authors(split))
  half = len(lm_world.ATTRIBUTES) // 2
  shown = [q for q in qa if lm_world.ATTRIBUTES.index(q.attribute) < half]
  held = [q for q in qa if lm_world.ATTRIBUTES.index(q.attribute) >= half]
  return shown, held
