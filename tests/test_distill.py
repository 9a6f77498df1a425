"""KL-regularised ascent, SCRUB, SCRUB+R and bad teacher against explicit formulas and loops."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxunlearn as ju
from jaxunlearn import data as selection
from jaxunlearn import recipes
from jaxunlearn._src import distill


def _np_kl(t, s, temp):
  def logsm(z):
    z = z / temp
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))

  lt, ls = logsm(np.asarray(t, np.float64)), logsm(np.asarray(s, np.float64))
  return (np.exp(lt) * (lt - ls)).sum(-1) * temp ** 2


@pytest.fixture(scope="module")
def small(digits):
  train, test = digits
  forget, retain = selection.split_forget(train, selection.class_ids(train, 3))
  retain = ju.data.Dataset(x=retain.x[:256], y=retain.y[:256], ids=retain.ids[:256], num_classes=10, name="r")
  forget = ju.data.Dataset(x=forget.x[:96], y=forget.y[:96], ids=forget.ids[:96], num_classes=10, name="f")
  apply, params = ju.models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
  loss = ju.losses.cross_entropy_loss(apply)
  both = recipes.as_dataset({"x": np.concatenate([forget.x, retain.x]), "y": np.concatenate([forget.y, retain.y])},
                            name="t")
  trained = ju.training.fit(loss, params, both, optimizer=optax.adam(1e-3), epochs=10, batch_size=64, seed=0)
  held = test.y == 3
  holdout = ju.data.Dataset(x=test.x[held], y=test.y[held], ids=test.ids[held], num_classes=10, name="h")
  return forget, retain, holdout, apply, trained, loss


def test_kl_to_teacher_is_the_tempered_kl():
  rng = np.random.default_rng(0)
  t, s = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 7)) * 3
  for temp in (1.0, 2.0, 4.0):
    np.testing.assert_allclose(ju.kl_to_teacher(jnp.asarray(t), jnp.asarray(s), temp), _np_kl(t, s, temp), rtol=1e-5,
                               atol=1e-6)


def test_scrub_losses_match_their_formulas(small):
  forget, retain, _, apply, params, _ = small
  student = jax.tree.map(lambda p: p * 0.9, params)
  max_loss, min_loss = distill._scrub_losses(apply, 2.0, 0.7, 0.3)
  batch = {"x": retain.x[:8], "y": retain.y[:8], "mask": np.array([1, 1, 1, 1, 1, 0, 1, 1], np.float32),
           "teacher": params}
  t, s = np.asarray(apply(params, batch["x"])), np.asarray(apply(student, batch["x"]))
  kl = _np_kl(t, s, 2.0)
  ls = s - s.max(-1, keepdims=True)
  ls = ls - np.log(np.exp(ls).sum(-1, keepdims=True))
  ce = -ls[np.arange(8), batch["y"]]
  m = batch["mask"]
  np.testing.assert_allclose(float(min_loss(student, batch)), np.sum(m * (0.7 * ce + 0.3 * kl)) / m.sum(), rtol=1e-5)
  np.testing.assert_allclose(float(max_loss(student, batch)), -np.sum(m * kl) / m.sum(), rtol=1e-5)


def test_scrub_is_max_epochs_then_min_epochs_with_one_optimizer(small):
  forget, retain, _, apply, params, _ = small
  hyper = dict(learning_rate=1e-3, weight_decay=0.1, temperature=2.0, ce_weight=1.0, kl_weight=0.5,
               forget_batch_size=32, retain_batch_size=64)
  out = recipes.scrub(None, params, forget=forget, retain=retain, seed=3, apply_fn=apply, epochs=3, max_epochs=2,
                      **hyper)

  # An explicit loop: the same batches, the losses written out, optax's Adam with coupled L2.
  def kl(p, b):
    t = jax.nn.log_softmax(apply(params, b["x"]) / 2.0)
    s = jax.nn.log_softmax(apply(p, b["x"]) / 2.0)
    return jnp.sum(jnp.exp(t) * (t - s), -1) * 4.0

  def mean(v, b):
    return jnp.sum(v * b["mask"]) / jnp.sum(b["mask"])

  def forget_loss(p, b):
    return -mean(kl(p, b), b)

  def retain_loss(p, b):
    ce = -jnp.take_along_axis(jax.nn.log_softmax(apply(p, b["x"])), b["y"][:, None], -1)[:, 0]
    return mean(ce + 0.5 * kl(p, b), b)

  opt = optax.chain(optax.add_decayed_weights(0.1), optax.adam(1e-3))
  p, state = params, opt.init(params)
  for epoch in range(3):
    plan = ([(forget_loss, b) for b in ju.data.batches(forget, 32, seed=4, epoch=epoch)] if epoch < 2 else [])
    plan += [(retain_loss, b) for b in ju.data.batches(retain, 64, seed=3, epoch=epoch)]
    for fn, b in plan:
      g = jax.grad(fn)(p, b)
      u, state = opt.update(g, state, p)
      p = optax.apply_updates(p, u)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(p)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)


def test_scrub_r_rewinds_to_the_epoch_closest_to_the_holdout_error(small):
  forget, retain, holdout, apply, params, _ = small
  stats = {}
  kw = dict(apply_fn=apply, epochs=4, max_epochs=2, learning_rate=2e-3)
  out = recipes.scrub_r(None, params, forget=forget, retain=retain, seed=0, holdout=holdout, stats=stats, **kw)
  # Each epoch's checkpoint is SCRUB run for that many epochs (deterministic): recompute the rule.
  err = lambda p, d: float(np.mean(np.argmax(ju.training.predict(apply, p, d.x), -1) != d.y))  # noqa: E731
  runs = [recipes.scrub(None, params, forget=forget, retain=retain, seed=0, **{**kw, "epochs": e})
          for e in range(1, 5)]
  reference = err(runs[-1], holdout)
  errors = [err(p, forget) for p in runs]
  assert stats["reference_error"] == reference and stats["forget_errors"] == errors
  best = int(np.argmin([abs(e - reference) for e in errors]))
  assert stats["epoch"] == best + 1
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(runs[best])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="scrub_r needs holdout"):
    recipes.scrub_r(None, params, forget=forget, retain=retain, seed=0, holdout=None, apply_fn=apply)


def test_bad_teacher_loss_mixes_the_teachers_per_example(small):
  _, retain, _, apply, params, _ = small
  bad_params = jax.tree.map(lambda p: -p, params)
  student = jax.tree.map(lambda p: p * 0.8, params)
  x = retain.x[:6]
  flag = np.array([1, 0, 1, 0, 0, 1], np.int32)
  loss = distill._bad_teacher_loss(apply, 1.0)
  got = float(loss(student, {"x": x, "y": flag, "mask": np.ones(6, np.float32),
                             "teacher": {"good": params, "bad": bad_params}}))
  sm = lambda z: np.exp(z - z.max(-1, keepdims=True)) / np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)  # noqa: E731
  good, bad, s = (sm(np.asarray(apply(p, x), np.float64)) for p in (params, bad_params, student))
  target = flag[:, None] * bad + (1 - flag[:, None]) * good
  want = np.mean(np.sum(target * (np.log(target) - np.log(s)), -1))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_kl_ascent_loss_and_recipe(small):
  forget, retain, _, apply, params, loss = small
  fn = distill._kl_ascent_loss(apply, loss, 10.0, 1.0)
  fb, rb = next(ju.data.batches(forget, 16, seed=0)), next(ju.data.batches(retain, 16, seed=0))
  student = jax.tree.map(lambda p: p * 0.9, params)
  kl = _np_kl(np.asarray(apply(params, rb["x"])), np.asarray(apply(student, rb["x"])), 1.0).mean()
  want = -float(loss(student, fb)) + 10.0 * kl
  np.testing.assert_allclose(float(fn(student, {"forget": fb, "retain": rb, "teacher": params})), want, rtol=1e-5)
  out = recipes.kl_ascent(loss, params, forget=forget, retain=retain, seed=0, apply_fn=apply)
  assert ju.training.dataset_accuracy(apply, out, forget) < ju.training.dataset_accuracy(apply, params, forget)
