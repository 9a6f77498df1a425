"""Forget an author with your own Flax NNX language model, in your own optax loop.

The model below is written here (a one-block transformer on Flax's own ``nnx.MultiHeadAttention``),
not the library's reference decoder: ``jaxunlearn.lm`` needs only ``logits_fn(params, input_ids)``.
It learns the facts of ten generated authors, then forgets the last one with gradient difference
(``jaxunlearn.gradient_difference`` in an optax chain, the LM losses of ``jaxunlearn.lm.losses``).

Run: ``python examples/forget_author_lm.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxunlearn
from jaxunlearn.lm import data, losses, tokenizer


class TinyLM(nnx.Module):
  """Token and position embeddings, one causal self-attention block with an MLP, an output head."""

  def __init__(self, vocab: int, dim: int, length: int, *, rngs: nnx.Rngs):
    self.tokens = nnx.Embed(vocab, dim, rngs=rngs)
    self.positions = nnx.Embed(length, dim, rngs=rngs)
    self.norm1, self.norm2 = nnx.LayerNorm(dim, rngs=rngs), nnx.LayerNorm(dim, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(num_heads=4, in_features=dim, decode=False, rngs=rngs)
    self.mlp_in, self.mlp_out = nnx.Linear(dim, 4 * dim, rngs=rngs), nnx.Linear(4 * dim, dim, rngs=rngs)
    self.head = nnx.Linear(dim, vocab, rngs=rngs)

  def __call__(self, ids: jax.Array) -> jax.Array:
    x = self.tokens(ids) + self.positions(jnp.arange(ids.shape[1]))[None]
    x = x + self.attn(self.norm1(x), mask=nnx.make_causal_mask(ids))
    x = x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.norm2(x))))
    return self.head(x)


def functional(model: nnx.Module):
  """``(logits_fn, params)``: the model as a function of a plain parameter dict."""
  graphdef, state = nnx.split(model)

  def logits_fn(params, ids):
    return nnx.merge(graphdef, nnx.State(jax.tree.map(nnx.Param, params)), copy=True)(ids)

  return logits_fn, nnx.to_pure_dict(state)


def main(epochs: int = 40, unlearn_steps: int = 20, learning_rate: float = 1e-4, seed: int = 0) -> dict:
  world = data.generate(data.WorldConfig.preset("tiny", seed))
  forget_qa = world.qa(world.forget_authors("forget10"))  # the last author (10 % of 10)
  retain_qa = world.qa(world.retain_authors("forget10"))
  length = data.length_for([q.question for q in forget_qa + retain_qa], [q.answer for q in forget_qa + retain_qa])
  forget = data.qa_batch([q.question for q in forget_qa], [q.answer for q in forget_qa], length=length)
  retain = data.qa_batch([q.question for q in retain_qa], [q.answer for q in retain_qa], length=length)
  everything = {k: np.concatenate([forget[k], retain[k]]) for k in forget}

  logits_fn, params = functional(TinyLM(tokenizer.VOCAB_SIZE, 64, length, rngs=nnx.Rngs(seed)))
  nll = losses.nll_loss(logits_fn)  # loss(params, batch): next-token NLL on the answers

  # 1. Learn every author (a plain optax loop).
  opt = optax.adamw(3e-3)
  opt_state = opt.init(params)

  @jax.jit
  def learn(params, opt_state, batch):
    updates, opt_state = opt.update(jax.grad(nll)(params, batch), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  for epoch in range(epochs):
    for batch in data.epoch_batches(everything, batch_size=32, seed=seed, epoch=epoch):
      params, opt_state = learn(params, opt_state, batch)

  def report(p):
    return {"forget_nll": float(nll(p, forget)), "retain_nll": float(nll(p, retain))}

  before = report(params)

  # 2. Forget the author: ascend its NLL while descending the retain NLL (gradient difference).
  tx = optax.chain(jaxunlearn.gradient_difference(), optax.adam(learning_rate))
  state = tx.init(params)

  @jax.jit
  def forget_step(params, state, fb, rb):
    updates, state = tx.update(jax.grad(nll)(params, fb), state, params, retain_grads=jax.grad(nll)(params, rb))
    return optax.apply_updates(params, updates), state

  rng = np.random.default_rng(seed)
  for _ in range(unlearn_steps):
    rows = rng.integers(0, len(retain["input_ids"]), size=len(forget["input_ids"]))
    params, state = forget_step(params, state, forget, {k: v[rows] for k, v in retain.items()})
  after = report(params)
  print(f"before: {before}\nafter gradient difference: {after}")
  return {"before": before, "after": after}


if __name__ == "__main__":
  main()
