"""The reference decoder, its generation, the tokenizer and the generated world."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.lm import data, models, tokenizer

SMALL = models.DecoderConfig(d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=96, hidden_layer=0)


@pytest.fixture(scope="module")
def lm():
  lm = models.create(SMALL, seed=3)
  # Sharpen the random model so that greedy choices are far from ties.
  params = jax.tree.map(lambda x: x * 1.5, lm.params)
  return dataclasses.replace(lm, params=params)


def test_tokenizer_round_trip_and_padding():
  text = "Zoë wrote «Tēa» in 1984."
  ids = tokenizer.encode(text, bos=True, eos=True)
  assert ids[0] == tokenizer.BOS and ids[-1] == tokenizer.EOS and max(ids) < tokenizer.VOCAB_SIZE
  assert tokenizer.decode(ids) == text
  ids, mask = tokenizer.encode_batch(["ab", "abcd"], left_pad=True)
  np.testing.assert_array_equal(mask, [[0, 0, 1, 1], [1, 1, 1, 1]])
  assert ids[0, 0] == tokenizer.PAD and tokenizer.decode(ids[0]) == "ab"
  with pytest.raises(ValueError, match="not a byte-tokenizer id"):
    tokenizer.decode([300])
  with pytest.raises(TypeError):
    tokenizer.encode(b"bytes")


def _reference_logits(lm, params, ids):
  """The decoder written out in NumPy (float64), from the parameter dict alone."""
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  cfg = lm.config
  h, dh = cfg.n_heads, cfg.d_model // cfg.n_heads
  x = p["embed"]["embedding"][ids]
  t = ids.shape[1]

  def norm(v, g):
    return v / np.sqrt(np.mean(v ** 2, -1, keepdims=True) + 1e-6) * g

  def rope(v):
    half = dh // 2
    freqs = cfg.rope_base ** (-np.arange(half) / half)
    ang = np.arange(t)[:, None] * freqs
    c, s = np.cos(ang)[None, :, None], np.sin(ang)[None, :, None]
    return np.concatenate([v[..., :half] * c - v[..., half:] * s, v[..., :half] * s + v[..., half:] * c], -1)

  for i in range(cfg.n_layers):
    blk = p["blocks"][i]
    a = norm(x, blk["attn_norm"]["scale"])
    q, k, v = (a @ blk["attn"][n]["kernel"] for n in "qkv")
    q, k, v = (y.reshape(y.shape[0], t, h, dh) for y in (q, k, v))
    q, k = rope(q), rope(k)
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(dh)
    s = np.where(np.tril(np.ones((t, t), bool))[None, None], s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    o = np.einsum("bhqk,bkhd->bqhd", w, v).reshape(x.shape)
    x = x + o @ blk["attn"]["o"]["kernel"]
    m = norm(x, blk["mlp_norm"]["scale"])
    g = m @ blk["mlp"]["gate"]["kernel"]
    x = x + (g / (1 + np.exp(-g)) * (m @ blk["mlp"]["up"]["kernel"])) @ blk["mlp"]["down"]["kernel"]
  return norm(x, p["norm"]["scale"]) @ p["head"]["kernel"]


def test_logits_match_a_numpy_decoder_and_grad_flows(lm):
  ids, _ = tokenizer.encode_batch(["Question: who?", "Answer: me"], bos=True)
  got = lm.logits_fn(lm.params, jnp.asarray(ids))
  np.testing.assert_allclose(np.asarray(got), _reference_logits(lm, lm.params, ids), rtol=2e-4, atol=2e-4)
  assert lm.hidden_fn(lm.params, ids).shape == (2, ids.shape[1], 32)
  grads = jax.grad(lambda p: jnp.sum(lm.logits_fn(p, ids)[:, -1, 5]))(lm.params)
  assert jax.tree.structure(grads) == jax.tree.structure(lm.params)
  assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads))


def test_generation_with_the_cache_equals_generation_without(lm):
  prompts = ["Question: Where was Ana born?\nAnswer: ", "Hi", "Question: x\nAnswer: "]
  ids, mask = tokenizer.encode_batch(prompts, bos=True, left_pad=True)
  cached = np.asarray(models.generate(lm, lm.params, ids, mask, max_new_tokens=12))
  uncached = np.asarray(models.generate_uncached(lm, lm.params, ids, mask, max_new_tokens=12))
  np.testing.assert_array_equal(cached, uncached)
  # Left padding changes nothing: each prompt alone gives the same continuation.
  for i, text in enumerate(prompts):
    one, m1 = tokenizer.encode_batch([text], bos=True)
    np.testing.assert_array_equal(np.asarray(models.generate(lm, lm.params, one, m1, max_new_tokens=12))[0], cached[i])


def test_generation_stops_at_eos_and_pads_after():
  lm = models.create(SMALL, seed=0)
  params = jax.tree.map(lambda x: x, lm.params)
  bias = np.zeros((SMALL.d_model, SMALL.vocab_size), np.float32)
  params["head"]["kernel"] = jnp.asarray(bias)  # uniform logits: argmax is token 0 everywhere
  ids, mask = tokenizer.encode_batch(["a"], bos=True)
  out = np.asarray(models.generate(lm, params, ids, mask, max_new_tokens=4, eos_id=0))
  np.testing.assert_array_equal(out, [[0, tokenizer.PAD, tokenizer.PAD, tokenizer.PAD]])
  with pytest.raises(ValueError, match="max_len"):
    models.generate(lm, params, ids, mask, max_new_tokens=200)


def test_world_is_deterministic_and_well_formed():
  a, b = data.generate(data.WorldConfig(authors=20, seed=1)), data.generate(data.WorldConfig(authors=20, seed=1))
  assert a == b and a != data.generate(data.WorldConfig(authors=20, seed=2))
  assert len(set(a.names)) == 20 and all(len(qas) == len(data.ATTRIBUTES) == 20 for qas in a.authors)
  for split, count in (("forget01", 1), ("forget05", 1), ("forget10", 2)):
    assert a.forget_count(split) == count and a.forget_authors(split) == list(range(20 - count, 20))
    assert set(a.retain_authors(split)).isdisjoint(a.forget_authors(split))
  assert {q.entity for q in a.holdout_qa("forget10")}.isdisjoint(a.names)
  for q in a.qa([0, 5]) + list(a.famous) + list(a.facts):
    assert q.entity in q.question and q.answer not in q.perturbed and len(set(q.perturbed)) == len(q.perturbed)
    assert q.paraphrased_answer not in q.perturbed and q.paraphrased_answer != q.answer
  with pytest.raises(ValueError, match="at least 10"):
    data.generate(data.WorldConfig(authors=5))
  with pytest.raises(ValueError, match="unknown split"):
    a.forget_count("forget20")


def test_qa_batch_labels_only_the_answer():
  b = data.qa_batch(["Who?"], ["Me."], length=32)
  text = tokenizer.decode(b["input_ids"][0])
  assert text == "Q: Who?\nA: Me."
  scored = b["labels"][0][b["labels"][0] != -100]
  assert tokenizer.decode(scored) == "Me." and scored[-1] == tokenizer.EOS
  with pytest.raises(ValueError, match="more than length"):
    data.qa_batch(["Who?"], ["Me."], length=8)
