"""Validation while unlearning (early stopping, checkpoint selection), Jang et al.'s MA / EL_n on
batches, and knowledge unlearning's stopping rule."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import methods
from jaxunlearn._src import lm_train
from jaxunlearn.lm import data, losses, metrics, models, recipes, tokenizer

TINY = models.DecoderConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=256, hidden_layer=0)


def _qa(world, authors, rows=None):
  qa = world.qa(authors)[:rows]
  return data.qa_batch([q.question for q in qa], [q.answer for q in qa], length=128)


def _forget_and_holdout(rows):
  """The tiny world's forget authors and holdout (never trained on) authors, ``rows`` QA each."""
  world = data.generate(data.WorldConfig.preset("tiny"))
  hq = world.holdout_qa("forget10")[:rows]
  return (_qa(world, world.forget_authors("forget10"), rows=rows),
          data.qa_batch([q.question for q in hq], [q.answer for q in hq], length=128))


def _successor_lm():
  """A causal "model" whose greedy next token is always the current token + 1 (mod the vocabulary):
  its continuations are known in closed form."""
  vocab = tokenizer.VOCAB_SIZE

  def logits_fn(params, ids):
    return 10.0 * jax.nn.one_hot((ids + 1) % vocab, vocab) + 0.0 * params["w"]

  return types.SimpleNamespace(logits_fn=logits_fn), {"w": jnp.zeros(())}


def test_extraction_likelihood_batch_equals_jangs_definition_on_generations_built_by_hand():
  # Runs of consecutive bytes (which the successor model continues) broken at known places.
  texts = ["abcdefghijklmnopqrstuvwxyz", "abcdefghijkZlmnopqrstuvwxyzABC", "mnopqrstuvwxyzabcdefg"]
  batch = data.text_batch(texts, length=40)
  lm, params = _successor_lm()
  got = metrics.extraction_likelihood_batch(lm, params, batch, n=4)
  vocab = tokenizer.VOCAB_SIZE
  for r, text in enumerate(texts):
    x = list(tokenizer.encode(text, bos=True, eos=True))
    # The continuation of x[:i] to the row's length, in closed form for the successor model;
    # jaxunlearn.lm.metrics.extraction_likelihood is the array-level definition (an explicit loop).
    gens = [[(x[i - 1] + k) % vocab for k in range(1, len(x) - i + 1)] for i in range(1, len(x))]
    expected = metrics.extraction_likelihood([gens], [x], n=4)[0]
    assert got[r] == pytest.approx(expected, rel=1e-12)
  assert 0 < got[0] < 1 and got[1] < got[0]  # a break in the run costs the n-grams across it
  # The sequence ends at its last scored token: without an attention mask the padding is not read.
  bare = {"input_ids": batch["input_ids"], "labels": batch["labels"]}
  np.testing.assert_array_equal(metrics.extraction_likelihood_batch(lm, params, bare, n=4), got)
  holed = {**batch, "attention_mask": batch["attention_mask"].copy()}
  holed["attention_mask"][1, 5] = 0
  with pytest.raises(ValueError, match="row 1"):
    metrics.extraction_likelihood_batch(lm, params, holed, n=4)


def test_cached_and_uncached_continuations_agree_with_a_greedy_loop():
  """The reference decoder goes through its KV cache, a plain logits_fn through the causal buffer:
  both give the tokens of an explicit greedy loop, so both give the same EL."""
  lm = models.create(TINY, seed=3)
  world = data.generate(data.WorldConfig.preset("tiny"))
  batch = _qa(world, world.forget_authors("forget10"), rows=2)
  plain = types.SimpleNamespace(logits_fn=lm.logits_fn)
  from jaxunlearn._src import lm_validation

  prompts, totals = [], []
  for r in range(2):
    length = int(batch["attention_mask"][r].sum())
    x = batch["input_ids"][r, :length]
    for i in (length - 14, length - 11):
      prompts.append(x[:i])
      totals.append(length)
  cached = lm_validation._continuations(lm, lm.params, prompts, totals)
  generic = lm_validation._continuations(plain, lm.params, prompts, totals)
  logits = jax.jit(lm.logits_fn)
  for p, total, a, b in zip(prompts, totals, cached, generic):
    seq = list(p)
    while len(seq) < total:  # the explicit loop, one token at a time (a fixed-width buffer: one compilation)
      buf = np.zeros((1, 128), np.int32)
      buf[0, :len(seq)] = seq
      seq.append(int(np.argmax(np.asarray(logits(lm.params, jnp.asarray(buf)))[0, len(seq) - 1])))
    np.testing.assert_array_equal(a, seq)
    np.testing.assert_array_equal(b, seq)


def test_memorization_accuracy_batch_matches_the_array_metric():
  lm = models.create(TINY, seed=4)
  world = data.generate(data.WorldConfig.preset("tiny"))
  batch = _qa(world, world.forget_authors("forget10"))  # 20 rows, one chunk
  logits = np.asarray(lm.logits_fn(lm.params, jnp.asarray(batch["input_ids"])))
  np.testing.assert_allclose(metrics.memorization_accuracy_batch(lm, lm.params, batch),
                             metrics.memorization_accuracy(logits, batch["labels"]))


def test_validation_selects_the_best_check_and_stops_at_the_target():
  lm = models.create(TINY, seed=5)
  forget, holdout = _forget_and_holdout(8)
  gap = recipes.holdout_gap(lm, forget, holdout)

  def nll(p, b):  # the gap by hand: per-row average NLL, then the mean
    lp, mask = losses.token_logprobs(lm.logits_fn(p, jnp.asarray(b["input_ids"])), jnp.asarray(b["labels"]))
    return float(np.mean(-np.asarray(lp).sum(1) / np.asarray(mask).sum(1)))

  assert gap(lm.params) == pytest.approx(abs(nll(lm.params, forget) - nll(lm.params, holdout)), rel=1e-5)

  seen = []
  values = iter([5.0, 3.0, 1.0, 2.0, 4.0, 6.0, 7.0, 8.0, 9.0])  # best at the second check after the start

  def signal(p):
    seen.append(p)
    return next(values)

  stats = {}
  kw = dict(forget=forget, epochs=4, batch_size=4, learning_rate=1e-3)
  best = recipes.gradient_ascent(lm, lm.params, validation=recipes.Validation(signal, every=1), stats=stats, **kw)
  assert [h["step"] for h in stats["validation"]] == list(range(9)) and stats["selected_step"] == 2
  for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(seen[2])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  plain = recipes.gradient_ascent(lm, lm.params, **kw)  # validation changes nothing but the choice
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(seen[-1])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  values = iter([5.0, 3.0, 1.0, 0.5, 0.1])
  seen.clear()
  stats = {}
  stop = recipes.Validation(signal, every=2, target=0.6, select="last")
  last = recipes.gradient_ascent(lm, lm.params, validation=stop, stats=stats, **kw)
  assert stats["stopped_at"] == 6 and stats["steps"] == 6 and [h["step"] for h in stats["validation"]] == [0, 2, 4, 6]
  for a, b in zip(jax.tree.leaves(last), jax.tree.leaves(seen[-1])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="every"):
    recipes.Validation(signal, every=0)
  with pytest.raises(ValueError, match="select"):
    recipes.Validation(signal, select="first")
  with pytest.raises(ValueError, match="finite"):
    recipes.gradient_ascent(lm, lm.params, validation=recipes.Validation(lambda p: float("nan")), **kw)
  with pytest.raises(TypeError, match="Validation"):
    recipes.npo(lm, lm.params, retain=None, validation=signal, **kw)


def test_knowledge_unlearning_stops_when_forget_memorisation_reaches_held_out_text():
  lm = models.create(TINY, seed=0)
  forget, holdout = _forget_and_holdout(12)
  trained, _ = lm_train.fit(lm.logits_fn, lm.params, forget, epochs=30, batch_size=12, learning_rate=3e-3)
  ma = lambda p, b: float(np.nanmean(metrics.memorization_accuracy_batch(lm, p, b)))  # noqa: E731
  assert ma(trained, forget) > ma(trained, holdout) + 0.2  # memorised, and the holdout is not
  stats = {}
  new = recipes.knowledge_unlearning(lm, trained, forget=forget, holdout=holdout, batch_size=4, learning_rate=2e-3,
                                     stats=stats)
  th = stats["thresholds"]
  assert th["memorization"] == pytest.approx(ma(trained, holdout))
  history = stats["validation"]
  assert stats["stopped_at"] == history[-1]["step"] == stats["steps"] > 0
  for h in history[:-1]:  # the rule did not hold before ...
    assert h["memorization"] > th["memorization"] or h["extraction_likelihood"] > th["extraction_likelihood"]
  final = history[-1]  # ... and holds at the stop, on the returned parameters
  assert final["memorization"] <= th["memorization"] and final["extraction_likelihood"] <= th["extraction_likelihood"]
  assert ma(new, forget) == pytest.approx(final["memorization"])
  assert methods.get("knowledge_unlearning", task="lm").needs == ("holdout",)
  with pytest.warns(recipes.StoppingRuleWarning, match="did not hold"):
    recipes.knowledge_unlearning(lm, trained, forget=forget, holdout=holdout, epochs=1, learning_rate=1e-9)
  short = data.text_batch(["tiny"], length=16)
  with pytest.raises(ValueError, match="no 10-gram"):
    recipes.knowledge_unlearning(lm, trained, forget=short, holdout=holdout)
