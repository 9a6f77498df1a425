"""nearest_adversarial against the closed form of a linear classifier; AMUN and ARU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxunlearn as ju
from jaxunlearn import recipes


def _linear(seed=0, n=40, d=5):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(d, 2)).astype(np.float32)
  b = rng.normal(size=2).astype(np.float32)
  x = rng.normal(size=(n, d)).astype(np.float32)
  apply = lambda p, x: jnp.reshape(x, (x.shape[0], -1)) @ p["w"] + p["b"][None]  # noqa: E731
  params = {"w": jnp.asarray(w), "b": jnp.asarray(b)}
  y = np.argmax(x @ w + b, -1)
  return apply, params, x, y, w, b


def test_nearest_adversarial_against_the_linear_closed_form():
  apply, params, x, y, w, b = _linear()
  out = ju.nearest_adversarial(apply, params, x, y, start=1 / 64, growth=1.25, rounds=40, steps=20)
  assert out["found"].all()
  # Two classes: the nearest point of the other class is at distance |z_y - z_k| / ||w_y - w_k||.
  z = x @ w + b
  d_min = np.abs(z[:, 0] - z[:, 1]) / np.linalg.norm(w[:, 0] - w[:, 1])
  dist = np.linalg.norm(out["x"] - x, axis=1)
  pred = np.argmax(out["x"] @ w + b, -1)
  np.testing.assert_array_equal(pred, out["label"])
  assert np.all(out["label"] != y)  # the label changed
  assert np.all(dist <= out["radius"] * (1 + 1e-5))  # within the radius that found it
  assert np.all(dist >= d_min * (1 - 1e-4))  # nothing is closer than the boundary
  # The gradient of the cross-entropy points along w_k - w_y: PGD finds the first radius past
  # the boundary, so the radius is at most one growth step beyond the closed-form distance (or
  # the first radius, for points nearer the boundary than it).
  first = np.float32(1 / 64 * np.mean(np.linalg.norm(x, axis=1)))
  assert np.all((out["radius"] < 1.25 * d_min * (1 + 1e-4)) | np.isclose(out["radius"], first, rtol=1e-5))
  assert np.sum(~np.isclose(out["radius"], first, rtol=1e-5)) >= 30  # most needed the search


def test_nearest_adversarial_reports_examples_it_cannot_flip():
  apply, params, x, y, *_ = _linear()
  out = ju.nearest_adversarial(apply, params, x, y, start=1e-6, growth=1.0, rounds=2, steps=5)
  assert not out["found"].any() and np.isnan(out["radius"]).all()
  with pytest.raises(ValueError, match="no inputs"):
    ju.nearest_adversarial(apply, params, x[:0], y[:0])


def test_amun_adds_the_adversarial_neighbours_and_aru_resets_the_chosen_entries(digits):
  train, _ = digits
  forget, retain = ju.data.split_forget(train, ju.data.random_ids(train, count=40, seed=0))
  apply, params = ju.models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
  loss = ju.losses.cross_entropy_loss(apply)
  trained = ju.training.fit(loss, params, train, optimizer=__import__("optax").adam(1e-3), epochs=5, batch_size=128,
                            seed=0)
  stats = {}
  out = recipes.amun(loss, trained, forget=forget, retain=retain, seed=0, apply_fn=apply, epochs=1, stats=stats)
  assert stats["found"] == 40 and stats["median_radius"] > 0
  assert jax.tree.structure(out) == jax.tree.structure(trained)
  init = ju.models.init_fn("mlp", train.input_shape, 10)
  stats = {}
  reset = recipes.aru(loss, trained, forget=forget, retain=retain, seed=0, apply_fn=apply, init_fn=init, epochs=0,
                      fraction=0.1, stats=stats)
  fresh = init(jax.random.fold_in(jax.random.key(0), 19))
  n = sum(x.size for x in jax.tree.leaves(trained))
  assert stats["reset"] == round(0.1 * n)
  changed = 0
  for r, t, f in zip(jax.tree.leaves(reset), jax.tree.leaves(trained), jax.tree.leaves(fresh)):
    r, t, f = np.asarray(r), np.asarray(t), np.asarray(f)
    moved = r != t
    np.testing.assert_array_equal(r[moved], f[moved])  # a reset entry holds its fresh value
    changed += moved.sum()
  assert changed >= 0.99 * stats["reset"]  # (a fresh value may equal the old one only by chance)
