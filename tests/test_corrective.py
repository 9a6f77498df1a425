"""Outlier detection for corrective unlearning, against a NumPy Local Outlier Factor."""

import numpy as np
import pytest

from jaxunlearn import corrective, data


def _lof_reference(x, k):
  """Breunig et al.'s LOF by explicit loops (Euclidean, k nearest excluding the point itself)."""
  n = len(x)
  d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
  np.fill_diagonal(d, np.inf)
  neigh = np.argsort(d, axis=1, kind="stable")[:, :k]
  kdist = d[np.arange(n), neigh[:, -1]]
  lrd = np.empty(n)
  for i in range(n):
    reach = [max(kdist[o], d[i, o]) for o in neigh[i]]
    lrd[i] = 1.0 / (np.mean(reach) + 1e-10)
  return np.array([np.mean(lrd[neigh[i]]) / lrd[i] for i in range(n)])


def _standardise(x):
  return (x - x.mean(0)) / x.std(0)


def test_lof_scores_match_the_reference_class_by_class():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(90, 3)) * np.array([1.0, 5.0, 0.2])
  y = np.repeat([2, 0, 1], 30)  # classes not in sorted order, rows grouped
  perm = rng.permutation(90)
  x, y = x[perm], y[perm]
  ids = 1000 + np.arange(90)[::-1]
  found = corrective.detect(x, y, ids, method="lof", n_neighbors=7)
  z = _standardise(x)  # standardised over all examples, then scored within each class
  for c in range(3):
    rows = np.flatnonzero(y == c)
    np.testing.assert_allclose(found.scores[rows], _lof_reference(z[rows], 7), rtol=1e-6)
  assert np.array_equal(found.flagged, found.scores > 1.5)
  assert set(found.ids.tolist()) == set(ids[found.flagged].tolist())
  row_of = {int(i): r for r, i in enumerate(ids)}
  assert len(found.ids) >= 2 and np.all(np.diff([found.scores[row_of[int(i)]] for i in found.ids]) <= 0)


def test_planted_mislabelled_points_are_found_by_both_detectors():
  rng = np.random.default_rng(1)
  centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
  y = np.repeat([0, 1, 2], 100)
  x = centers[y] + rng.normal(size=(300, 2))
  ids = np.arange(300) * 3
  flipped = np.array([5, 150, 260])
  y_bad = y.copy()
  y_bad[flipped] = (y[flipped] + 1) % 3  # each now claims a class it lies far from
  for method in ("lof", "iforest"):
    found = corrective.detect(x, y_bad, ids, method=method, seed=0)
    precision, recall = found.precision_recall(ids[flipped])
    assert recall == 1.0, method
    assert precision >= (0.1 if method == "lof" else 0.05), (method, precision)  # the auto rules flag tails too
    assert set(found.ids[:3].tolist()) == set(ids[flipped].tolist())  # the most outlying first
  top = corrective.detect(x, y_bad, ids, method="iforest", fraction=0.01, seed=0)
  assert len(top.ids) == 3 and set(top.ids.tolist()) == set(ids[flipped].tolist()) and top.threshold is None
  again = corrective.detect(x, y_bad, ids, method="iforest", seed=0)
  np.testing.assert_array_equal(again.scores, corrective.detect(x, y_bad, ids, method="iforest", seed=0).scores)


def test_loss_column_and_small_classes():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(62, 2))
  y = np.zeros(62, int)
  y[:2] = 1  # a class of two: never flagged
  loss = np.ones(62)
  loss[40] = 50.0  # an example the model cannot fit, with ordinary features
  plain = corrective.detect(x, y, np.arange(62), method="lof")
  with_loss = corrective.detect(x, y, np.arange(62), method="lof", loss=loss)
  assert 40 in with_loss.ids.tolist() and with_loss.scores[40] > plain.scores[40]
  assert np.all(with_loss.scores[:2] == 0)


def test_precision_recall_and_bad_input():
  found = corrective.Detection(method="lof", ids=np.array([1, 2, 3, 4]), scores=np.zeros(4),
                               flagged=np.ones(4, bool), threshold=1.5)
  assert found.precision_recall([2, 4, 9, 10, 11]) == (0.5, 0.4)
  x, y = np.zeros((10, 2)), np.zeros(10, int)
  with pytest.raises(ValueError, match="unknown detector"):
    corrective.detect(x, y, np.arange(10), method="svm")
  with pytest.raises(ValueError, match="NaN"):
    corrective.detect(np.full((10, 2), np.nan), y, np.arange(10))
  with pytest.raises(ValueError, match="same length"):
    corrective.detect(x, y[:5], np.arange(10))
  with pytest.raises(ValueError, match="unique"):
    corrective.detect(x, y, np.zeros(10, int))
  with pytest.raises(ValueError, match="fraction"):
    corrective.detect(x, y, np.arange(10), fraction=1.0)
  with pytest.raises(ValueError, match="one finite value"):
    corrective.detect(x, y, np.arange(10), loss=np.ones(3))
  with pytest.raises(TypeError):
    corrective.detect(x, y, np.arange(10).astype(float))


def test_add_trigger_matches_stamp_trigger():
  train, _ = data.load("digits")
  poisoned, ids = data.stamp_trigger(train, 0.05, seed=0, target_label=0)
  pos = train.positions(ids)
  np.testing.assert_array_equal(poisoned.x[pos], data.add_trigger(train.x[pos]))
  assert np.all(poisoned.x[pos][:, -2:, -2:, :] == 1.0) and np.all(poisoned.y[pos] == 0)


def test_penultimate_is_the_head_input():
  import jax

  from jaxunlearn import models

  apply, params = models.create("mlp", (8, 8, 1), 10, key=jax.random.key(1), hidden=(32, 16))
  x = np.random.default_rng(0).normal(size=(5, 8, 8, 1)).astype(np.float32)
  h = x.reshape(5, -1)
  for k in sorted(params["hidden"]):
    h = np.maximum(h @ np.asarray(params["hidden"][k]["kernel"]) + np.asarray(params["hidden"][k]["bias"]), 0)
  np.testing.assert_allclose(corrective.penultimate(apply, params, x), h, rtol=1e-5, atol=1e-6)
  logits = h @ np.asarray(params["head"]["kernel"]) + np.asarray(params["head"]["bias"])
  np.testing.assert_allclose(np.asarray(apply(params, x)), logits, rtol=1e-5, atol=1e-5)
