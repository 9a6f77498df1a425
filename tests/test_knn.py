"""The exact-forgetting kNN classifier against a NumPy brute force, and forgetting against a
rebuilt index (ties included)."""

import numpy as np
import pytest

import jaxunlearn as ju


def _brute(x, y, ids, q, k, num_classes):
  """Neighbours by squared distance, ties by id; label by majority, ties by the smaller class."""
  d = ((q[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1)
  order = np.lexsort((np.broadcast_to(ids, d.shape), d), axis=1)[:, :k]
  nb = ids[order]
  votes = np.zeros((len(q), num_classes), int)
  for i in range(len(q)):
    for j in order[i]:
      votes[i, y[j]] += 1
  return nb, votes.argmax(1)


def test_neighbours_and_labels_match_a_brute_force_with_ties():
  rng = np.random.default_rng(0)
  # Integer coordinates: many exact distance ties, computed exactly in float32.
  x = rng.integers(0, 4, size=(300, 3)).astype(np.float32)
  y = rng.integers(0, 5, 300)
  ids = rng.permutation(10_000)[:300]
  q = rng.integers(0, 4, size=(57, 3)).astype(np.float32)
  knn = ju.KNNClassifier(x, y, ids, k=7, num_classes=5, chunk=64)
  got_ids, got_d = knn.kneighbors(q, batch_size=16)
  want_ids, want_label = _brute(x, y, ids, q, 7, 5)
  np.testing.assert_array_equal(got_ids, want_ids)
  assert np.all(np.diff(got_d, axis=1) >= 0)
  np.testing.assert_array_equal(knn.predict(q, batch_size=16), want_label)


def test_forget_equals_an_index_built_without_the_ids():
  rng = np.random.default_rng(1)
  x = np.round(rng.normal(size=(1000, 8)), 1).astype(np.float32)
  x[500:520] = x[0]  # duplicated rows: exact ties between ids
  y = rng.integers(0, 10, 1000)
  ids = np.arange(1000) * 3 + 11
  q = np.concatenate([x[:40] + 0.05, rng.normal(size=(60, 8)).astype(np.float32)])
  knn = ju.KNNClassifier(x, y, ids, k=5, chunk=128)
  gone = np.concatenate([ids[:10], ids[500:505], rng.choice(ids[10:], 50, replace=False)])
  gone = np.unique(gone)
  with pytest.raises(TypeError, match="ids must be integers"):
    knn.forget(gone.astype(float))  # float ids are refused (the library's id rule), nothing removed
  assert len(knn) == 1000
  assert knn.forget(gone) == len(gone)
  keep = ~np.isin(ids, gone)
  rebuilt = ju.KNNClassifier(x[keep], y[keep], ids[keep], k=5, num_classes=10, chunk=128)
  a, da = knn.kneighbors(q)
  b, db = rebuilt.kneighbors(q)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(da, db)
  np.testing.assert_array_equal(knn.predict(q), rebuilt.predict(q))
  assert not np.isin(a, gone).any() and len(knn) == keep.sum()
  np.testing.assert_array_equal(knn.ids, np.sort(ids[keep]))
  # A second request, after which a rebuilt index has fewer chunks (850 rows: 7 of 128, not 8).
  more = rng.choice(ids[keep], 150 - len(gone) + 65, replace=False)
  knn.forget(more)
  keep &= ~np.isin(ids, more)
  rebuilt = ju.KNNClassifier(x[keep], y[keep], ids[keep], k=5, num_classes=10, chunk=128)
  assert rebuilt._rows.shape[0] < knn._rows.shape[0]
  for got, want in zip(knn.kneighbors(q), rebuilt.kneighbors(q)):
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(knn.predict(q), rebuilt.predict(q))


def test_bad_input_is_named():
  x, y = np.zeros((3, 2), np.float32), np.array([0, 1, 1])
  knn = ju.KNNClassifier(x, y, [1, 2, 3], k=2)
  with pytest.raises(ValueError, match=r"ids not in the index: \[9\]"):
    knn.forget([9, 1])
  assert len(knn) == 3  # nothing removed
  knn.forget([1])
  with pytest.raises(ValueError, match=r"ids not in the index: \[1\]"):
    knn.forget([1])
  with pytest.raises(ValueError, match="no ids"):
    knn.forget([])
  with pytest.raises(ValueError, match="features"):
    knn.predict(np.zeros((1, 3)))
  with pytest.raises(ValueError, match="NaN"):
    ju.KNNClassifier(np.array([[np.nan]]), [0], [0])
  with pytest.raises(ValueError, match="unique"):
    ju.KNNClassifier(np.zeros((2, 1)), [0, 0], [4, 4])
  # Fewer rows than k: the missing neighbours are id -1 at infinite distance.
  ids, d = ju.KNNClassifier(np.zeros((1, 1)), [0], [8], k=3).kneighbors(np.zeros((1, 1)))
  assert ids.tolist() == [[8, -1, -1]] and np.isinf(d[0, 1:]).all()


def test_an_index_sharded_over_8_devices_answers_as_the_unsharded_one():
  import jax

  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("rows",))
  rng = np.random.default_rng(2)
  x = rng.integers(0, 3, size=(3000, 4)).astype(np.float32)  # many exact ties, across devices
  y = rng.integers(0, 6, 3000)
  ids = rng.permutation(3000) + 100
  q = rng.integers(0, 3, size=(70, 4)).astype(np.float32)
  one = ju.KNNClassifier(x, y, ids, k=9, chunk=64)
  sharded = ju.KNNClassifier(x, y, ids, k=9, chunk=64, mesh=mesh)
  assert len(sharded._rows.sharding.device_set) == 8
  for got, want in zip(sharded.kneighbors(q), one.kneighbors(q)):
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(sharded.kneighbors(q)[0], _brute(x, y, ids, q, 9, 6)[0])
  gone = rng.choice(ids, 400, replace=False)
  one.forget(gone)
  sharded.forget(gone)
  for got, want in zip(sharded.kneighbors(q), one.kneighbors(q)):
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(sharded.predict(q), one.predict(q))
