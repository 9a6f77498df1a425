import re

import numpy as np
import pytest

from jaxunlearn import data
from jaxunlearn._src import id_text


def test_digits_split_is_fixed_and_ids_stable(digits):
  train, test = digits
  assert (len(train), len(test)) == (1437, 360)
  np.testing.assert_array_equal(train.ids, np.arange(1437))
  np.testing.assert_array_equal(test.ids, np.arange(360))
  assert train.x.dtype == np.float32 and train.x.shape[1:] == (8, 8, 1)
  assert 0.0 <= train.x.min() and train.x.max() <= 1.0
  # Independent reference: scikit-learn's own arrays, every fifth image is test.
  from sklearn.datasets import load_digits

  bunch = load_digits()
  np.testing.assert_array_equal(test.y, bunch.target[::5])
  np.testing.assert_allclose(test.x[7, ..., 0], bunch.images[35] / 16.0, rtol=1e-6)
  again = data.load("digits")
  np.testing.assert_array_equal(again.train.x, train.x)


def test_mnist1d_generated_offline_and_rng_untouched():
  np.random.seed(123)
  before = np.random.get_state()[1].copy()
  train, test = data.load("mnist1d")
  after = np.random.get_state()[1]
  np.testing.assert_array_equal(before, after)
  assert (len(train), len(test)) == (4000, 1000)
  assert train.x.shape[1:] == (40, 1) and train.num_classes == 10
  assert set(np.unique(train.y)) == set(range(10))
  again = data.load("mnist1d")
  np.testing.assert_array_equal(again.train.x, train.x)


@pytest.mark.parametrize("bad", ["nope", "tfds:", "mnist1d:7", "mnist1d:x", 3])
def test_unknown_dataset_names_raise(bad):
  with pytest.raises(ValueError, match="mnist1d|dataset"):
    data.load(bad)


def test_tfds_mock_data_source_reads_through_data_source():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12):
    splits = data.load("tfds:cifar10")
  assert len(splits.train) == 12 and splits.train.x.shape[1:] == (32, 32, 3)
  assert splits.train.x.dtype == np.float32 and splits.train.x.max() <= 1.0
  assert splits.train.num_classes == 10
  np.testing.assert_array_equal(splits.train.ids, np.arange(12))


def test_tfds_without_prepared_data_explains_how(tmp_path):
  with pytest.raises(FileNotFoundError, match="tfds build mnist --file_format=array_record"):
    data.load("tfds:mnist", data_dir=str(tmp_path))


def test_class_ids_and_errors(digits):
  train, _ = digits
  ids = data.class_ids(train, 3)
  assert len(ids) > 0 and np.all(train.y[train.positions(ids)] == 3)
  assert np.sum(train.y == 3) == len(ids)
  with pytest.raises(ValueError, match=r"class label\(s\) \[10\] out of range"):
    data.class_ids(train, 10)
  with pytest.raises(ValueError, match="out of range"):
    data.class_ids(train, [-1])


def test_random_ids_seeded_and_fraction_checked(digits):
  train, _ = digits
  a = data.random_ids(train, 0.1, seed=4)
  b = data.random_ids(train, 0.1, seed=4)
  c = data.random_ids(train, 0.1, seed=5)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert len(a) == round(0.1 * len(train)) and len(np.unique(a)) == len(a)
  for bad in (0.0, 1.0, -0.5, 2):
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
      data.random_ids(train, bad, seed=0)


def test_split_forget_partitions_and_rejects_bad_sets(digits):
  train, _ = digits
  forget, retain = data.split_forget(train, [5, 1, 5, 900])
  np.testing.assert_array_equal(forget.ids, [1, 5, 900])
  assert len(retain) == len(train) - 3
  assert not set(retain.ids) & set(forget.ids)
  np.testing.assert_array_equal(forget.x[2], train.x[900])
  with pytest.raises(ValueError, match="empty"):
    data.split_forget(train, [])
  with pytest.raises(ValueError, match="ids not in dataset 'digits': 5000, 99999"):
    data.split_forget(train, [1, 5000, 99999])
  with pytest.raises(ValueError, match="nothing would be retained"):
    data.split_forget(train, train.ids)


def test_flip_labels_changes_exactly_the_selected(digits):
  train, _ = digits
  noisy, ids = data.flip_labels(train, 0.2, seed=1)
  changed = np.nonzero(noisy.y != train.y)[0]
  np.testing.assert_array_equal(np.sort(train.ids[changed]), ids)
  assert noisy.y.min() >= 0 and noisy.y.max() < 10


def test_stamp_trigger_patches_corner(digits):
  train, _ = digits
  poisoned, ids = data.stamp_trigger(train, 0.05, seed=2, target_label=7, patch_size=2)
  pos = train.positions(ids)
  assert np.all(poisoned.x[pos, 6:, 6:, :] == 1.0)
  assert np.all(poisoned.y[pos] == 7)
  other = np.setdiff1d(np.arange(len(train)), pos)
  np.testing.assert_array_equal(poisoned.x[other], train.x[other])
  with pytest.raises(ValueError, match="target_label"):
    data.stamp_trigger(train, 0.05, seed=2, target_label=10)


def test_parse_forget_specs(digits, tmp_path):
  train, _ = digits
  np.testing.assert_array_equal(id_text.parse_forget("class:3", train, seed=0), data.class_ids(train, 3))
  assert len(id_text.parse_forget("random:0.05", train, seed=0)) == round(0.05 * len(train))
  f = tmp_path / "ids.txt"
  f.write_text("# forget these\n3\n17\n\n42\n")
  np.testing.assert_array_equal(id_text.parse_forget(f"ids:{f}", train, seed=0), [3, 17, 42])
  f.write_text("3\nabc\n")
  with pytest.raises(ValueError, match="ids.txt:2"):
    id_text.parse_forget(f"ids:{f}", train, seed=0)
  with pytest.raises(ValueError, match="unknown forget spec"):
    id_text.parse_forget("half", train, seed=0)


def test_batches_fixed_shape_padding_and_coverage(digits):
  train, _ = digits
  out = list(data.batches(train, 100, seed=3))
  assert len(out) == data.num_batches(len(train), 100) == 15
  assert all(b["x"].shape == (100, 8, 8, 1) for b in out)
  last = out[-1]
  assert last["mask"].sum() == len(train) % 100 and np.all(last["ids"][last["mask"] == 0] == -1)
  seen = np.concatenate([b["ids"][b["mask"] > 0] for b in out])
  np.testing.assert_array_equal(np.sort(seen), train.ids)
  # Inputs travel with their ids.
  b = out[0]
  np.testing.assert_array_equal(b["x"], train.x[train.positions(b["ids"])])
  with pytest.raises(ValueError, match="explicit seed"):
    next(data.batches(train, 10, seed=None))


def test_shuffle_depends_on_ids_not_positions(digits):
  train, _ = digits
  order_all = train.ids[data.id_order(train.ids, seed=9, epoch=2)]
  removed = np.array([4, 10, 700])
  sub = train.drop(removed)
  order_sub = sub.ids[data.id_order(sub.ids, seed=9, epoch=2)]
  np.testing.assert_array_equal(order_sub, order_all[~np.isin(order_all, removed)])
  assert not np.array_equal(order_all, train.ids[data.id_order(train.ids, seed=9, epoch=3)])


# -- ids are integers, nothing else (a string is not a list of digits, 3.7 is not 3) -------------

@pytest.mark.parametrize("bad, message", [
    ("17", "string '17'"),
    ([3.7], "non-integer entries: 3.7"),
    (np.array([24.9]), "non-integer entries: 24.9"),
    ([3.0], "non-integer entries: 3.0"),
    (np.array([True, False]), "boolean array"),
    (True, "boolean"),
    ([1, "2"], "non-integer entries: '2'"),
    (np.array(["1", "2"]), "non-integer entries: '1', '2'"),
    (None, "NoneType"),
    ([None], "non-integer entries: None"),
])
def test_non_integer_ids_are_refused_by_every_entry_point(digits, bad, message):
  train, _ = digits
  for fn in (data.as_ids, lambda i: data.check_ids(train, i), lambda i: data.split_forget(train, i),
             train.positions, train.take, train.drop):
    with pytest.raises(TypeError, match=re.escape(message)):
      fn(bad)


def test_out_of_range_and_multidimensional_ids(digits):
  train, _ = digits
  with pytest.raises(ValueError, match="out of the int64 range: 99999999999999999999"):
    data.check_ids(train, [99999999999999999999])
  with pytest.raises(ValueError, match="out of the int64 range"):
    data.as_ids(np.array([2**63], np.uint64))
  with pytest.raises(ValueError, match=r"one-dimensional.*\(1, 2\)"):
    data.as_ids([[1, 2]])


def test_integer_ids_of_every_kind_are_accepted(digits):
  train, _ = digits
  want = np.array([3, 17], np.int64)
  for ids in ([17, 3], (3, 17), np.array([17, 3], np.int32), np.array([3, 17], np.uint16),
              [np.int64(17), np.int8(3)], np.array([17, 3], dtype=object), [17, 3, 17]):
    got = data.check_ids(train, ids)
    assert got.dtype == np.int64 and np.array_equal(got, want), ids
  assert data.as_ids(5).tolist() == [5] and data.as_ids(np.int32(5)).tolist() == [5]
  assert data.as_ids([]).shape == (0,)


@pytest.mark.parametrize("content, encoding", [
    ("3\n17 # a comment\n\n", "utf-8"),
    ("3\r\n17\r\n", "utf-8"),
    ("3\n17\n", "utf-8-sig"),
    ("3\n17\n", "utf-16"),  # with its byte-order mark
])
def test_read_ids_file_decodes_text(tmp_path, content, encoding):
  path = tmp_path / "ids.txt"
  path.write_bytes(content.encode(encoding))
  assert id_text.read_ids_file(str(path)).tolist() == [3, 17]


@pytest.mark.parametrize("content, message", [
    ("3\n1_9\n", r"ids.txt:2: expected an integer id, got '1_9'"),
    ("3.7\n", r"ids.txt:1: expected an integer id, got '3.7'"),
    ("1e3\n", r"got '1e3'"),
    ("\u0661\u0662\n", r"ids.txt:1: expected an integer id"),  # Arabic-Indic digits: int() would take them
    ("99999999999999999999\n", r"ids.txt:1: id 99999999999999999999 is out of the int64 range"),
    ("3 17\n", r"got '3 17'"),
])
def test_read_ids_file_refuses_malformed_lines(tmp_path, content, message):
  path = tmp_path / "ids.txt"
  path.write_text(content, encoding="utf-8")
  with pytest.raises(ValueError, match=message):
    id_text.read_ids_file(str(path))


def test_read_ids_file_refuses_what_is_not_a_text_file(tmp_path):
  with pytest.raises(ValueError, match="is a directory"):
    id_text.read_ids_file(str(tmp_path))
  with pytest.raises(ValueError, match="no such file"):
    id_text.read_ids_file(str(tmp_path / "missing.txt"))
  path = tmp_path / "ids.bin"
  path.write_bytes(b"3\n\x80\x81\n")
  with pytest.raises(ValueError, match="is not UTF-8 text"):
    id_text.read_ids_file(str(path))


def test_random_ids_by_count(digits):
  train, _ = digits
  a = data.random_ids(train, count=7, seed=2)
  assert len(a) == 7 and len(np.unique(a)) == 7 and np.isin(a, train.ids).all()
  np.testing.assert_array_equal(a, data.random_ids(train, count=7, seed=2))
  for bad in (0, len(train), -1, 2.0, True):
    with pytest.raises(ValueError, match="count must be an integer"):
      data.random_ids(train, count=bad, seed=0)
  with pytest.raises(ValueError, match="exactly one of fraction= and count="):
    data.random_ids(train, 0.1, count=3, seed=0)
