"""What the multi-process test computes, shared by the worker processes and the single-process
reference (tests/test_distributed.py)."""

import jax
import numpy as np
import optax

import jaxunlearn as ju
from jaxunlearn._src import recipes, training


def data():
  train, _ = ju.data.load("digits")
  return train.x[:128], train.y[:128], np.ones(128, np.float32)


def compute(batch) -> dict:
  """Fisher diagonal, one Adam step and one gradient-difference step on a (global) batch; the
  first half of the batch is the forget batch, the second the retain batch."""
  apply, params = ju.models.create("mlp", (8, 8, 1), 10, key=jax.random.key(0), hidden=(32, 16))
  loss = ju.losses.cross_entropy_loss(apply)
  fisher = ju.fisher_diagonal(loss, params, batch, batch_size=16)
  opt = optax.adam(1e-2)
  stepped, _, value = training.compiled_step(loss, opt)(params, opt.init(params), batch)
  half = jax.tree.map(lambda a: a.shape[0] // 2, batch)["x"]
  forget = {k: v[:half] for k, v in batch.items()}
  retain = {k: v[half:] for k, v in batch.items()}
  tx, gd = recipes._graddiff_step(loss, opt, 1.0, 1.0)
  diffed, _ = gd(params, tx.init(params), forget, retain)
  flat = lambda tree, name: {f"{name}/{jax.tree_util.keystr(p)}": host(v)  # noqa: E731
                             for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
  return {**flat(fisher, "fisher"), **flat(stepped, "step"), **flat(diffed, "graddiff"), "loss": host(value)}


def fitted(mesh) -> dict:
  """``training.fit`` data-parallel over ``mesh``: 2 epochs of 256 digits in batches of 64."""
  train, _ = ju.data.load("digits")
  ds = train.take(train.ids[:256])
  apply, params = ju.models.create("mlp", (8, 8, 1), 10, key=jax.random.key(1), hidden=(32, 16))
  out = training.fit(ju.losses.cross_entropy_loss(apply), params, ds, optimizer=optax.adam(1e-2), epochs=2,
                     batch_size=64, seed=0, mesh=mesh)
  return {f"fit/{jax.tree_util.keystr(p)}": v for p, v in jax.tree_util.tree_flatten_with_path(ju.distributed.to_host(out))[0]}


def host(v) -> np.ndarray:
  """A replicated (possibly multi-process) array's value."""
  if isinstance(v, jax.Array) and not v.is_fully_addressable:
    assert v.is_fully_replicated, v.sharding
    return np.asarray(v.addressable_data(0))
  return np.asarray(v)


def lm_params():
  """A small decoder's parameters (deterministic), for the sharded-checkpoint test."""
  from jaxunlearn.lm import models

  lm = models.create(models.DecoderConfig(d_model=64, n_layers=2, n_heads=4, d_ff=128), seed=3)
  return jax.tree.map(np.asarray, lm.params)


def lm_recipe(mesh) -> dict:
  """One epoch of the LM gradient-difference recipe with FSDP-sharded parameters and sharded
  batches on ``mesh`` (``data`` x ``fsdp``), as host arrays."""
  from jaxunlearn.lm import data as lm_data
  from jaxunlearn.lm import models, recipes, sharding

  world = lm_data.generate(lm_data.WorldConfig.preset("tiny"))
  f, r = world.qa(world.forget_authors("forget10")), world.qa(world.retain_authors("forget10"))
  forget = lm_data.qa_batch([q.question for q in f][:12], [q.answer for q in f][:12], length=128)
  retain = lm_data.qa_batch([q.question for q in r][:24], [q.answer for q in r][:24], length=128)
  lm = models.create(models.DecoderConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=256, hidden_layer=0),
                     seed=0)
  out = recipes.gradient_difference(lm, sharding.shard_params(lm.params, mesh), forget=forget, retain=retain, epochs=1,
                                    batch_size=8, seed=0, batch_sharding=sharding.batch_sharding(mesh))
  return {f"lm/{jax.tree_util.keystr(p)}": v for p, v in jax.tree_util.tree_flatten_with_path(ju.distributed.to_host(out))[0]}
