"""Random labels, freeze_entries, SalUn's saliency mask and the recipes built on them."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxunlearn as ju
from jaxunlearn import data as selection
from jaxunlearn import recipes


@pytest.fixture(scope="module")
def small(digits):
  train, _ = digits
  forget_ids = selection.class_ids(train, 3)
  forget, retain = selection.split_forget(train, forget_ids)
  retain = ju.data.Dataset(x=retain.x[:300], y=retain.y[:300], ids=retain.ids[:300], num_classes=10, name="r")
  apply, params = ju.models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
  return forget, retain, apply, params, ju.losses.cross_entropy_loss(apply)


def test_random_labels_are_wrong_uniform_and_tied_to_ids():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 10, 20000)
  ids = rng.permutation(20000) * 7 + 3
  out = ju.random_labels(y, ids, 10, seed=5)
  assert np.all(out != y) and out.min() >= 0 and out.max() < 10
  # The offset (out - y - 1) mod 10 is uniform over 0..8: a chi-square test at ~1e-4 significance.
  counts = np.bincount((out - y - 1) % 10, minlength=10)
  assert counts[9] == 0
  expected = len(y) / 9
  assert np.sum((counts[:9] - expected) ** 2 / expected) < 33.7
  # The same id gets the same label in any order, in any subset; another seed gives others.
  perm = rng.permutation(len(y))[:5000]
  np.testing.assert_array_equal(ju.random_labels(y[perm], ids[perm], 10, seed=5), out[perm])
  assert np.mean(ju.random_labels(y, ids, 10, seed=6) != out) > 0.8
  with pytest.raises(ValueError, match="at least 2 classes"):
    ju.random_labels(y, ids, 1, seed=0)


@pytest.mark.parametrize("opt", [optax.adam(0.1), optax.adamw(0.1, weight_decay=0.5), optax.sgd(0.1, momentum=0.9)])
def test_freeze_entries_holds_entries_bit_for_bit(opt):
  params = {"w": jnp.arange(6.0).reshape(2, 3) + 1, "b": jnp.array([0.5, -0.5])}
  trainable = {"w": jnp.array([[1, 0, 1], [0, 1, 0]]), "b": jnp.array([0, 1])}
  tx = optax.chain(ju.freeze_entries(trainable), opt, ju.freeze_entries(trainable))
  state = tx.init(params)
  p = params
  for i in range(5):
    grads = jax.tree.map(lambda x: jnp.full_like(x, 1.0 + i), p)
    updates, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, updates)
  for k in params:
    frozen = np.asarray(trainable[k]) == 0
    np.testing.assert_array_equal(np.asarray(p[k])[frozen], np.asarray(params[k])[frozen])
    assert np.all(np.asarray(p[k])[~frozen] != np.asarray(params[k])[~frozen])
  if "adam" in str(opt):
    mu = state[1][0].mu
    assert float(jnp.abs(mu["w"] * (1 - trainable["w"])).max()) == 0.0  # no momentum builds up there


def test_saliency_mask_against_numpy_ranking(small):
  forget, _, _, params, loss = small
  mask = ju.saliency_mask(loss, params, forget, fraction=0.3, batch_size=50)  # several batches, one partial
  # Reference: the gradient of the mean loss over the whole forget set at once, ranked in NumPy.
  whole = {"x": forget.x, "y": forget.y}
  g = jax.grad(loss)(params, whole)
  flat = np.concatenate([np.abs(np.asarray(x, np.float64)).ravel() for x in jax.tree.leaves(g)])
  k = int(round(0.3 * flat.size))
  want = np.zeros(flat.size)
  want[np.argsort(-flat, kind="stable")[:k]] = 1
  got = np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(mask)])
  assert got.sum() == k
  # Float32 accumulation may swap entries whose magnitudes tie to ~1e-6 at the cut.
  cut = np.sort(flat)[::-1][k - 1]
  differ = got != want
  assert np.all(np.abs(flat[differ] - cut) <= 1e-5 * cut + 1e-9)
  assert differ.sum() <= 4
  with pytest.raises(ValueError, match="fraction"):
    ju.saliency_mask(loss, params, forget, fraction=0.0)


def test_salun_moves_only_salient_weights_and_forgets(small):
  forget, retain, apply, params, loss = small
  trained = ju.training.fit(loss, params, ju.recipes.as_dataset(
      {"x": np.concatenate([forget.x, retain.x]), "y": np.concatenate([forget.y, retain.y])}, name="t"),
      optimizer=optax.adam(1e-3), epochs=15, batch_size=64, seed=0)
  stats = {}
  out = recipes.salun(loss, trained, forget=forget, retain=retain, seed=0, fraction=0.2, stats=stats)
  mask = ju.saliency_mask(loss, trained, forget, fraction=0.2)
  assert stats["selected"] == int(round(0.2 * stats["parameters"]))
  for o, t, m in zip(jax.tree.leaves(out), jax.tree.leaves(trained), jax.tree.leaves(mask)):
    o, t, m = np.asarray(o), np.asarray(t), np.asarray(m)
    np.testing.assert_array_equal(o[m == 0], t[m == 0])
  assert ju.training.dataset_accuracy(apply, out, forget) < 0.1
  assert ju.training.dataset_accuracy(apply, out, retain) > 0.85


def test_random_label_forgets_and_trains_on_the_union(small):
  forget, retain, apply, params, loss = small
  # On the relabelled forget set alone, with every label wrong, forget accuracy goes to ~0.
  out = recipes.random_label(loss, params, forget=forget, retain=None, seed=1, with_retain=False, epochs=20)
  assert ju.training.dataset_accuracy(apply, out, forget) < 0.05
  with pytest.raises(ValueError, match="random_label needs retain"):
    recipes.random_label(loss, params, forget=forget, retain=None, seed=1)
