"""The method registry and the public recipes."""

import inspect
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxunlearn as ju
from jaxunlearn import cli, methods, recipes


def _shrink(loss_fn, params, *, forget, retain, seed, factor=0.25):
  """A toy method: scale every parameter (nothing a real user should do)."""
  del loss_fn, forget, retain, seed
  return jax.tree.map(lambda p: p * factor, params)


def _shrink_many(stacked, *, factor):
  return jax.tree.map(lambda p: p * factor, stacked.params)


@pytest.fixture
def toy():
  method = methods.register(methods.Method("shrink", "scale every parameter", "none (a test's toy)", _shrink,
                                           _shrink_many))
  yield method
  methods.unregister("shrink")


def test_a_registered_method_runs_in_demo_and_score_without_touching_other_files(toy, tmp_path, capsys):
  assert toy.defaults == {"factor": 0.25}
  out = tmp_path / "demo.json"
  assert cli.main(["demo", "--methods", "shrink", "--epochs", "3", "--json", str(out)]) == 0
  row = json.loads(out.read_text())["methods"]["shrink"]
  assert "scale every parameter (factor=0.25)" == row["description"]
  assert 0.0 <= row["test_acc"] <= 1.0 and row["mia_auc"] > 0
  out = tmp_path / "score.json"
  assert cli.main(["score", "--methods", "shrink,ssd", "--models", "4", "--epochs", "3", "--json", str(out)]) == 0
  report = json.loads(out.read_text())
  assert set(report["methods"]) == {"shrink", "ssd"} and len(report["methods"]["shrink"]["epsilon"]) == 144
  assert cli.main(["methods"]) == 0
  assert "shrink" in capsys.readouterr().out
  with pytest.raises(ValueError, match="already registered"):
    methods.register(toy)


def test_registry_defaults_are_the_recipes_signatures():
  for name in methods.names():
    m = methods.get(name)
    params = inspect.signature(m.unlearn).parameters
    assert m.unlearn is getattr(recipes, name)  # named like the registry key
    for k, v in m.defaults.items():
      assert params[k].default == v
    assert {"forget", "retain", "seed"} <= set(params)
  assert methods.get("ssd").defaults["alpha_scale"] == 0.5 and "alpha" not in methods.get("ssd").defaults
  with pytest.raises(ValueError, match="unknown method 'oracle'.*finetune"):
    methods.get("oracle")
  with pytest.raises(TypeError, match=r"ssd has no argument\(s\) \['alpah'\]"):
    methods.get("ssd")(None, None, forget=None, retain=None, seed=0, alpah=3.0)


def test_recipes_take_datasets_or_dicts_and_match_the_pieces(digits):
  train, _ = digits
  forget, retain = ju.data.split_forget(train, ju.data.class_ids(train, 3))
  apply, params = ju.models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
  loss = ju.losses.cross_entropy_loss(apply)
  # SSD from the pieces, by hand: Fisher on the forget set and on all training data, then dampen.
  i_f = ju.fisher_diagonal(loss, params, {"x": forget.x, "y": forget.y}, batch_size=64)
  i_d = ju.fisher_diagonal(loss, params, {"x": train.x, "y": train.y}, batch_size=64)
  # The default alpha is half the bound n / n_forget (above it nothing can be selected).
  want = ju.ssd_dampen(params, i_f, i_d, alpha=0.5 * len(train) / len(forget), dampening=1.0)
  for f, r in ((forget, retain), (forget.as_batch(), retain.as_batch())):
    got = recipes.ssd(loss, params, forget=f, retain=r)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  # fisher_diagonal takes the library's own Dataset (it failed with "leading sizes [-1]").
  a = ju.fisher_diagonal(loss, params, forget, batch_size=64)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(i_f)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # Gradient ascent is fit with chain(gradient_ascent(), sgd): the same steps written out.
  got = recipes.gradient_ascent(loss, params, forget=forget.as_batch(), retain=None, seed=5, epochs=1, batch_size=50)
  p, opt = params, optax.sgd(2e-2)
  s = opt.init(p)
  for batch in ju.data.batches(forget, 50, seed=5, epoch=0):
    g = jax.grad(loss)(p, batch)
    u, s = opt.update(jax.tree.map(jnp.negative, g), s, p)
    p = optax.apply_updates(p, u)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(p)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  with pytest.raises(TypeError, match="forget must be a jaxunlearn.data.Dataset or a dict"):
    recipes.gradient_ascent(loss, params, forget=[1, 2], retain=None, seed=0)
  with pytest.raises(ValueError, match="gradient_difference needs retain="):
    recipes.gradient_difference(loss, params, forget=forget, retain=None, seed=0)


def test_demo_and_score_report_progress_per_stage(toy):
  from jaxunlearn._src import demo, score

  seen = []
  demo.run(methods=["shrink"], epochs=1, progress=lambda *a: seen.append(a))
  assert seen == [("original", 1, 3), ("retrained", 2, 3), ("shrink", 3, 3)]
  seen.clear()
  score.run(methods=["shrink"], n_models=4, epochs=1, progress=lambda *a: seen.append(a))
  assert seen == [("originals", 1, 4), ("retrained", 2, 4), ("retrain ceiling", 3, 4), ("shrink", 4, 4)]
