"""Language-model recipes (closed-form first steps), the cached pipeline, and `jaxunlearn lm demo`."""

import json
import os
import types

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import cli, methods
from jaxunlearn.lm import benchmark, data, losses, models, recipes

TINY = models.DecoderConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=256, hidden_layer=0)


def _batches():
  world = data.generate(data.WorldConfig(authors=10, famous=4, places=6, perturbed=3))
  f, r = world.qa(world.forget_authors("forget10")), world.qa(world.retain_authors("forget10"))
  forget = data.qa_batch([q.question for q in f][:6], [q.answer for q in f][:6], length=128)
  retain = data.qa_batch([q.question for q in r][:6], [q.answer for q in r][:6], length=128)
  return forget, retain


def _assert_adam_first_step(p0, p1, direction, lr, wd):
  """AdamW's first step (bias-corrected m/sqrt(v) = sign(g)): p1 = p0 - lr sign(g) - lr wd p0."""
  for a, b, g in zip(jax.tree.leaves(p0), jax.tree.leaves(p1), jax.tree.leaves(direction)):
    a, b, g = (np.asarray(x, np.float64) for x in (a, b, g))
    big = np.abs(g) > 1e-4  # far from Adam's epsilon (1e-8): |m / (sqrt(v) + eps)| within 1e-4 of 1
    expected = a - lr * np.sign(g) - lr * wd * a
    np.testing.assert_allclose(b[big], expected[big], rtol=1e-5, atol=1e-7)


def test_gradient_ascent_first_step_is_adamw_on_the_negated_gradient():
  lm = models.create(TINY, seed=1)
  forget, _ = _batches()
  lr, wd = 1e-3, 0.01
  new = recipes.gradient_ascent(lm, lm.params, forget=forget, epochs=1, batch_size=8, learning_rate=lr, weight_decay=wd)
  g = jax.grad(lambda p: losses.nll(lm.logits_fn(p, forget["input_ids"]), forget["labels"]))(lm.params)
  _assert_adam_first_step(lm.params, new, jax.tree.map(lambda x: -x, g), lr, wd)
  before = float(losses.nll(lm.logits_fn(lm.params, forget["input_ids"]), forget["labels"]))
  more = recipes.gradient_ascent(lm, lm.params, forget=forget, epochs=5, batch_size=8, learning_rate=lr)
  assert float(losses.nll(lm.logits_fn(more, forget["input_ids"]), forget["labels"])) > before + 0.1


@pytest.mark.parametrize("retain_loss", ["nll", "kl"])
def test_gradient_difference_first_step(retain_loss):
  lm = models.create(TINY, seed=2)
  forget, retain = _batches()
  lr, wd = 1e-3, 0.0
  # A random retain minibatch of batch_size rows is drawn; with 6 identical rows it is known exactly.
  same = {k: v[np.zeros(6, np.int64)] for k, v in retain.items()}
  new = recipes.gradient_difference(lm, lm.params, forget=forget, retain=same, epochs=1, batch_size=8,
                                    learning_rate=lr, weight_decay=wd, retain_loss=retain_loss, forget_weight=1.0,
                                    retain_weight=0.5)
  fg = jax.grad(lambda p: losses.nll(lm.logits_fn(p, forget["input_ids"]), forget["labels"]))(lm.params)
  rows = {k: v[np.zeros(8, np.int64)] for k, v in retain.items()}
  if retain_loss == "nll":
    rg = jax.grad(lambda p: losses.nll(lm.logits_fn(p, rows["input_ids"]), rows["labels"]))(lm.params)
  else:  # at the starting point the KL's gradient is zero
    rg = jax.tree.map(jnp.zeros_like, lm.params)
  _assert_adam_first_step(lm.params, new, jax.tree.map(lambda r, f: 0.5 * r - f, rg, fg), lr, wd)


def test_recipes_refuse_bad_batches():
  lm = models.create(TINY)
  forget, _ = _batches()
  with pytest.raises(ValueError, match="lacks"):
    recipes.gradient_ascent(lm, lm.params, forget={"input_ids": forget["input_ids"]})
  with pytest.raises(ValueError, match="no scored labels"):
    recipes.gradient_ascent(lm, lm.params, forget={**forget, "labels": np.full_like(forget["labels"], -100)})
  with pytest.raises(ValueError, match="retain_loss"):
    recipes.gradient_difference(lm, lm.params, forget=forget, retain=forget, retain_loss="mse")
  assert methods.get("gradient_ascent", task="lm").defaults["epochs"] == 10
  assert set(methods.names(task="lm")) >= {"gradient_ascent", "gradient_difference"}


class UserLM(nnx.Module):
  """A user's own model (not the library's decoder): embedding, one causal mixing layer, head."""

  def __init__(self, vocab, dim, *, rngs):
    self.embed = nnx.Embed(vocab, dim, rngs=rngs)
    self.mix = nnx.Linear(dim, dim, rngs=rngs)
    self.out = nnx.Linear(dim, vocab, rngs=rngs)

  def __call__(self, ids):
    x = self.embed(ids)
    causal = jnp.cumsum(x, axis=1) / jnp.arange(1, ids.shape[1] + 1)[None, :, None]
    return self.out(jax.nn.gelu(self.mix(causal)))


def test_a_user_written_flax_model_unlearns_through_the_same_recipes():
  graphdef, state = nnx.split(UserLM(259, 24, rngs=nnx.Rngs(0)))
  params = nnx.to_pure_dict(state)

  def logits_fn(p, ids):
    st = nnx.State(jax.tree.map(nnx.Param, p))
    return nnx.merge(graphdef, st, copy=True)(ids)

  user = types.SimpleNamespace(logits_fn=logits_fn)
  forget, retain = _batches()
  nll = lambda p, b: float(losses.nll(logits_fn(p, b["input_ids"]), b["labels"]))  # noqa: E731
  ascended = recipes.gradient_ascent(user, params, forget=forget, epochs=3, batch_size=8, learning_rate=1e-2)
  assert nll(ascended, forget) > nll(params, forget) + 0.05  # less likely (5.55 -> 5.63 here)
  new = recipes.gradient_difference(user, params, forget=forget, retain=retain, epochs=1, batch_size=8)
  assert any(bool(np.any(np.asarray(a) != np.asarray(b))) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params)))
  assert jax.tree.structure(new) == jax.tree.structure(params)


@pytest.mark.slow  # 21 s on 2 cores: run with `python -m pytest -m slow`
def test_pipeline_caches_and_retrains_a_damaged_stage(tmp_path):
  world = data.generate(data.WorldConfig.preset("tiny"))
  train = benchmark.TrainConfig(pretrain_epochs=1, finetune_epochs=1)
  logs = []
  first = benchmark.build(world, split="forget10", model=TINY, train=train, cache_dir=str(tmp_path), log=logs.append)
  assert sorted(os.listdir(tmp_path))[0].startswith("pretrain-") and len(os.listdir(tmp_path)) == 3
  logs.clear()
  again = benchmark.build(world, split="forget10", model=TINY, train=train, cache_dir=str(tmp_path), log=logs.append)
  assert sum("reusing" in m for m in logs) == 3
  for a, b in zip(jax.tree.leaves(first.target), jax.tree.leaves(again.target)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Damage the target's checkpoint: it is trained again (same result), never trusted.
  target_dir = next(p for p in os.listdir(tmp_path) if p.startswith("target-"))
  os.remove(os.path.join(tmp_path, target_dir, "jaxunlearn.json"))
  logs.clear()
  third = benchmark.build(world, split="forget10", model=TINY, train=train, cache_dir=str(tmp_path), log=logs.append)
  assert any("damaged" in m for m in logs)
  for a, b in zip(jax.tree.leaves(first.target), jax.tree.leaves(third.target)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  ticks = []
  row = benchmark.compare(benchmark.evaluate(first.lm, first.target, world, "forget10",
                                             progress=lambda *a: ticks.append(a)),
                          benchmark.evaluate(first.lm, first.retain, world, "forget10"))
  assert ticks == [(i, 6) for i in range(1, 7)]
  assert 0 <= row["forget_quality"] <= 1 and 0 <= row["model_utility"] <= 1 and 0 <= row["forget_rouge"] <= 1


@pytest.mark.slow  # 38 s on 2 cores: run with `python -m pytest -m slow`
def test_lm_demo_command_writes_json_and_plot(tmp_path):
  out, png = tmp_path / "lm.json", tmp_path / "lm.png"
  rc = cli.main(["lm", "demo", "--world", "tiny", "--no-cache", "--relearn", "--methods", "simnpo,knowledge_unlearning",
                 "--select", "simnpo", "--json", str(out), "--plot", str(png)])
  assert rc == 0
  report = json.loads(out.read_text())
  keys = {"forget_quality", "model_utility", "forget_truth_ratio", "forget_rouge", "privleak", "extraction_strength",
          "seconds", "tokens_per_s"}
  assert set(report) >= {"target", "retain", "methods"}
  assert set(report["methods"]) == {"simnpo", "knowledge_unlearning", "simnpo+select"}
  assert 0 <= report["methods"]["simnpo+select"]["selected_step"] <= report["methods"]["simnpo"]["steps"]
  for row in [report["target"], report["retain"], *report["methods"].values()]:
    assert keys <= set(row) and "relearn_steps" in row
  assert report["retain"]["forget_quality"] == 1.0 and report["retain"]["privleak"] == 0.0
  assert report["methods"]["simnpo"]["tokens_per_s"] > 0
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert cli.main(["lm", "demo", "--methods", "npo_typo", "--world", "tiny", "--no-cache"]) == 2


@pytest.mark.parametrize("method", ["npo", "simnpo", "idkdpo", "undial"])
def test_reference_methods_first_step_is_adamw_on_the_array_losses(method):
  """The recipe (reference quantities cached once, filler rows ignored) against the array-level
  loss of jaxunlearn.lm.losses computed directly, with the starting model as the reference."""
  lm = models.create(TINY, seed=4)
  forget, retain = _batches()
  same = {k: v[np.zeros(6, np.int64)] for k, v in retain.items()}
  rows = {k: v[np.zeros(8, np.int64)] for k, v in retain.items()}
  idk = data.idk_batch(["Q"] * 6, ["I don't know.", "No idea."], seed=0, length=128)
  p0, lr, wd = lm.params, 1e-3, 0.0
  f = lambda p, b: lm.logits_fn(p, b["input_ids"])  # noqa: E731
  ref_f, ref_idk = f(p0, forget), f(p0, idk)
  hyper = {"npo": dict(beta=0.3, gamma=0.7, alpha=0.5), "simnpo": dict(beta=4.5, delta=0.2, gamma=0.125, alpha=1.0),
           "idkdpo": dict(beta=0.2, gamma=1.0, alpha=0.5), "undial": dict(beta=3.0)}[method]

  def loss(p):
    h = hyper
    if method == "npo":
      term = h["gamma"] * losses.npo(f(p, forget), ref_f, forget["labels"], beta=h["beta"])
    elif method == "simnpo":
      term = h["gamma"] * losses.simnpo(f(p, forget), forget["labels"], beta=h["beta"], delta=h["delta"])
    elif method == "idkdpo":
      term = h["gamma"] * losses.dpo(f(p, idk), ref_idk, idk["labels"], f(p, forget), ref_f, forget["labels"],
                                     beta=h["beta"])
    else:
      return losses.undial(f(p, forget), ref_f, forget["labels"], beta=h["beta"])
    return term + h["alpha"] * losses.nll(f(p, rows), rows["labels"])

  extra = {"idk": idk} if method == "idkdpo" else {}
  stats = {}
  new = getattr(recipes, method)(lm, p0, forget=forget, retain=same, epochs=1, batch_size=8, learning_rate=lr,
                                 weight_decay=wd, stats=stats, **extra, **hyper)
  _assert_adam_first_step(p0, new, jax.grad(loss)(p0), lr, wd)
  assert stats["steps"] == 1 and stats["tokens"] > 0
  assert methods.get(method, task="lm").unlearn is getattr(recipes, method)


def test_rmu_first_step_trains_only_the_selected_parameters():
  lm = models.create(TINY, seed=5)
  forget, retain = _batches()
  same = {k: v[np.zeros(6, np.int64)] for k, v in retain.items()}
  rows = {k: v[np.zeros(8, np.int64)] for k, v in retain.items()}
  p0, lr, steering = lm.params, 1e-3, 3.0
  u = np.random.default_rng(11).uniform(size=TINY.d_model)
  control = steering * u / np.linalg.norm(u)

  def loss(p):
    fmask, rmask = forget["labels"] != -100, rows["labels"] != -100
    f = losses.rmu_activation_loss(lm.hidden_fn(p, forget["input_ids"]), control, fmask)
    r = losses.rmu_activation_loss(lm.hidden_fn(p, rows["input_ids"]), lm.hidden_fn(p0, rows["input_ids"]), rmask)
    return f + 0.5 * r

  new = recipes.rmu(lm, p0, forget=forget, retain=same, seed=11, epochs=1, batch_size=8, learning_rate=lr,
                    weight_decay=0.0, steering=steering, alpha=0.5, trainable="blocks/0/mlp/down")  # TINY steers block 0
  g = jax.grad(loss)(p0)
  for path, before in jax.tree_util.tree_flatten_with_path(p0)[0]:
    key = jax.tree_util.keystr(path, simple=True, separator="/")
    after = dict((jax.tree_util.keystr(q, simple=True, separator="/"), x)
                 for q, x in jax.tree_util.tree_flatten_with_path(new)[0])[key]
    if key == "blocks/0/mlp/down/kernel":
      grad = dict((jax.tree_util.keystr(q, simple=True, separator="/"), x)
                  for q, x in jax.tree_util.tree_flatten_with_path(g)[0])[key]
      _assert_adam_first_step({"k": before}, {"k": after}, {"k": grad}, lr, 0.0)
      assert not np.array_equal(np.asarray(before), np.asarray(after))
    else:
      np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
  with pytest.raises(ValueError, match="selects no parameter"):
    recipes.rmu(lm, p0, forget=forget, retain=same, trainable="nothing_here")
  with pytest.raises(ValueError, match="hidden_fn"):
    recipes.rmu(types.SimpleNamespace(logits_fn=lm.logits_fn), p0, forget=forget, retain=same)


def test_gradient_accumulation_equals_the_larger_batch():
  """NPO's forget term is a mean over rows: two accumulated minibatches of 4 rows (the same rows,
  in the same order) give the update of one minibatch of 8."""
  lm = models.create(TINY, seed=6)
  world = data.generate(data.WorldConfig(authors=10, famous=4, places=6, perturbed=3))
  f = world.qa(world.forget_authors("forget10"))[:16]
  forget = data.qa_batch([q.question for q in f], [q.answer for q in f], length=128)
  kw = dict(forget=forget, retain=None, epochs=2, alpha=0.0, learning_rate=1e-3)
  big = recipes.npo(lm, lm.params, batch_size=8, **kw)
  accumulated = recipes.npo(lm, lm.params, batch_size=4, accumulate=2, **kw)
  for a, b in zip(jax.tree.leaves(big), jax.tree.leaves(accumulated)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="accumulate"):
    recipes.npo(lm, lm.params, batch_size=4, accumulate=0, **kw)


@pytest.mark.parametrize("method", ["gradient_difference", "rmu"])
def test_bf16_compute_keeps_float32_master_weights(method):
  lm = models.create(TINY, seed=7)
  forget, retain = _batches()
  kw = dict(forget=forget, retain=retain, epochs=2, batch_size=8, learning_rate=1e-3)
  if method == "rmu":
    kw["trainable"] = "blocks/0/mlp/down"
  f32 = getattr(recipes, method)(lm, lm.params, **kw)
  bf16 = getattr(recipes, method)(lm, lm.params, compute_dtype=jnp.bfloat16, **kw)
  diffs = []
  for a, b, p in zip(jax.tree.leaves(f32), jax.tree.leaves(bf16), jax.tree.leaves(lm.params)):
    assert b.dtype == jnp.float32  # master weights stay float32
    a, b, p = (np.asarray(x, np.float64) for x in (a, b, p))
    moved = np.abs(a - p) > 1e-6
    # Adam's sign-like first steps: the bf16 run moves the same parameters the same way, almost everywhere.
    if moved.any():
      agree = np.mean(np.sign(b - p)[moved] == np.sign(a - p)[moved])
      assert agree > 0.9
    diffs.append(np.max(np.abs(a - b)))
  assert 0 < max(diffs) < 1e-2  # bf16 really ran (results differ), and only by rounding-sized amounts


def test_relearning_attack_counts_steps_and_gives_up():
  world = data.generate(data.WorldConfig.preset("tiny"))
  lm = models.create(TINY, seed=8)
  assert benchmark.relearn_steps(lm, lm.params, world, "forget10", threshold=0.0) == 0  # already there
  # An untrained model cannot reach a perfect ROUGE-L on unseen facts in 4 steps.
  assert benchmark.relearn_steps(lm, lm.params, world, "forget10", threshold=1.01, max_steps=4, check_every=2) is None
  assert benchmark.relearn_threshold(lm, lm.params, world, "forget10", fraction=0.0) == 0.0


def test_a_second_request_of_the_same_shapes_does_not_compile_again():
  """The recipes' optimizers and jitted steps are cached per setting: deletion requests after the
  first reuse the compiled program (the model function is traced once)."""
  lm = models.create(TINY, seed=9)
  traces = []

  def logits_fn(p, ids):
    traces.append(1)  # runs only while JAX traces
    return lm.logits_fn(p, ids)

  user = types.SimpleNamespace(logits_fn=logits_fn)
  forget, retain = _batches()
  for method in ("gradient_ascent", "gradient_difference", "npo"):
    kw = dict(forget=forget, retain=retain, epochs=1, batch_size=8, learning_rate=1e-3)
    getattr(recipes, method)(user, lm.params, **kw)
    first = len(traces)
    again = getattr(recipes, method)(user, lm.params, **kw)
    assert len(traces) == first, method
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(again))
