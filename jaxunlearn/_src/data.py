"""Datasets with stable example ids, forget-set selection and a deterministic batch iterator.

Every example carries an integer id: a split's examples are numbered ``0..n-1`` in the dataset's
fixed order, so an id names the same example in every run. Shuffling is keyed on ids (a hash of
``(seed, epoch, id)``), never on array positions, so removing examples leaves the relative order
of all others unchanged: the property exact unlearning (SISA) relies on.
"""

from __future__ import annotations

import dataclasses
import os
import random as _pyrandom
import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

EMBEDDED_DATASETS = ("digits", "mnist1d")
TFDS_PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A labelled split held in host memory.

  Attributes:
    x: inputs, ``float32`` with a leading example axis (images are ``(n, H, W, C)`` in [0, 1],
      1-D signals ``(n, L, 1)``).
    y: ``int32`` labels in ``[0, num_classes)``.
    ids: ``int64`` stable example ids, unique within the split.
    num_classes: number of classes.
    name: the dataset name it was loaded under.
  """

  x: np.ndarray
  y: np.ndarray
  ids: np.ndarray
  num_classes: int
  name: str

  def __post_init__(self):
    n = len(self.x)
    if len(self.y) != n or len(self.ids) != n:
      raise ValueError(
          f"x, y and ids must have the same length; got {n}, {len(self.y)} and {len(self.ids)}."
      )
    if len(np.unique(self.ids)) != n:
      raise ValueError("example ids must be unique within a dataset.")
    y = np.asarray(self.y)
    if not np.issubdtype(y.dtype, np.integer):
      raise ValueError(f"labels y must be integers, got dtype {y.dtype}.")
    if n and (y.min() < 0 or y.max() >= self.num_classes):
      bad = np.unique(y[(y < 0) | (y >= self.num_classes)])
      raise ValueError(f"labels {bad[:10].tolist()} are out of range for num_classes={self.num_classes} "
                       f"(classes 0..{self.num_classes - 1}).")

  def __len__(self) -> int:
    return len(self.x)

  @property
  def input_shape(self) -> tuple[int, ...]:
    """Shape of one input example."""
    return tuple(self.x.shape[1:])

  def positions(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Array positions of the given ids (validated by ``as_ids``); raises ``ValueError`` listing
    ids not in the split."""
    ids = as_ids(ids)
    order = np.argsort(self.ids, kind="stable")
    sorted_ids = self.ids[order]
    if len(sorted_ids) == 0:
      where, found = np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
    else:
      where = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
      found = sorted_ids[where] == ids
    if not np.all(found):
      missing = np.unique(ids[~found])
      shown = ", ".join(str(int(i)) for i in missing[:20])
      more = f" (and {len(missing) - 20} more)" if len(missing) > 20 else ""
      raise ValueError(
          f"ids not in dataset {self.name!r}: {shown}{more}; valid ids are those of its "
          f"{len(self)} examples."
      )
    return order[where]

  def as_batch(self) -> dict[str, np.ndarray]:
    """The whole split as one batch ``{"x", "y", "ids"}`` (what ``fisher_diagonal`` and the
    losses take)."""
    return {"x": self.x, "y": self.y, "ids": self.ids}

  def take(self, ids: Sequence[int] | np.ndarray) -> "Dataset":
    """The sub-dataset holding exactly ``ids`` (in the split's order)."""
    pos = np.sort(self.positions(ids))
    return dataclasses.replace(self, x=self.x[pos], y=self.y[pos], ids=self.ids[pos])

  def drop(self, ids: Sequence[int] | np.ndarray) -> "Dataset":
    """The sub-dataset without ``ids`` (which must all be in the split)."""
    keep = np.ones(len(self), dtype=bool)
    keep[self.positions(ids)] = False
    return dataclasses.replace(self, x=self.x[keep], y=self.y[keep], ids=self.ids[keep])


class Splits(NamedTuple):
  """A dataset's train and test splits."""

  train: Dataset
  test: Dataset


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load(name: str = "digits", *, data_dir: str | None = None) -> Splits:
  """Loads a dataset's train and test splits by name.

  Names:
    * ``"digits"`` (the default): scikit-learn's bundled 8x8 handwritten digits, 1,797 images of
      10 classes, shipped with scikit-learn (no network). Test = every fifth image of the bundled
      order (360), train = the rest (1,437). Inputs ``(n, 8, 8, 1)`` scaled to [0, 1].
    * ``"mnist1d"``: MNIST-1D (Greydanus, 2020) generated procedurally with the ``mnist1d``
      package's generator and its standard arguments (seed 42): 4,000 train / 1,000 test signals
      of length 40, inputs ``(n, 40, 1)``. ``"mnist1d:N"`` generates N train and N/4 test
      examples (N a positive multiple of 4) for scaling runs.
    * ``"tfds:NAME"`` (e.g. ``tfds:mnist``, ``tfds:cifar10``): a TensorFlow Datasets dataset read
      with ``tfds.data_source`` (ArrayRecord, no TensorFlow). The data must already be prepared
      under ``data_dir`` (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).

  Args:
    name: dataset name, as above.
    data_dir: TFDS data directory (TFDS names only).

  Returns:
    ``Splits(train, test)``; each split's ids are ``0..n-1`` in the dataset's fixed order.

  Raises:
    ValueError: unknown name or malformed size.
    FileNotFoundError: a TFDS dataset that is not prepared on disk, with instructions.

  Example:
    >>> from jaxunlearn import data
    >>> train, test = data.load("digits")
    >>> len(train), len(test), train.input_shape
    (1437, 360, (8, 8, 1))
  """
  if not isinstance(name, str):
    raise ValueError(f"dataset name must be a string, got {name!r}.")
  if name == "digits":
    return _load_digits()
  if name == "mnist1d" or name.startswith("mnist1d:"):
    n_train = 4000
    if ":" in name:
      size = name.split(":", 1)[1]
      if not size.isdigit() or int(size) <= 0 or int(size) % 4:
        raise ValueError(
            f"mnist1d size must be a positive multiple of 4 (the train count), got {size!r} in {name!r}."
        )
      n_train = int(size)
    return _load_mnist1d(n_train)
  if name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX):
    return _load_tfds(name[len(TFDS_PREFIX):], data_dir)
  raise ValueError(
      f"unknown dataset {name!r}; expected one of {', '.join(EMBEDDED_DATASETS)}, 'mnist1d:N', "
      "or 'tfds:NAME' (e.g. 'tfds:mnist', 'tfds:fashion_mnist', 'tfds:cifar10', 'tfds:cifar100')."
  )


def _make(x: np.ndarray, y: np.ndarray, num_classes: int, name: str) -> Dataset:
  return Dataset(
      x=np.ascontiguousarray(x, dtype=np.float32),
      y=np.asarray(y, dtype=np.int32),
      ids=np.arange(len(x), dtype=np.int64),
      num_classes=int(num_classes),
      name=name,
  )


def _load_digits() -> Splits:
  from sklearn.datasets import load_digits

  bunch = load_digits()
  x = (bunch.images / 16.0).astype(np.float32)[..., None]
  y = bunch.target
  is_test = np.arange(len(x)) % 5 == 0
  return Splits(_make(x[~is_test], y[~is_test], 10, "digits"), _make(x[is_test], y[is_test], 10, "digits"))


def _load_mnist1d(n_train: int) -> Splits:
  # The generator reseeds the global NumPy and Python RNGs; restore them so loading has no side effect.
  np_state, py_state = np.random.get_state(), _pyrandom.getstate()
  try:
    import warnings

    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # importing mnist1d imports matplotlib.pyplot
      from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = n_train + n_train // 4
    args.train_split = 0.8
    raw = make_dataset(args)
  finally:
    np.random.set_state(np_state)
    _pyrandom.setstate(py_state)
  name = "mnist1d" if n_train == 4000 else f"mnist1d:{n_train}"
  return Splits(
      _make(raw["x"][..., None], raw["y"], 10, name), _make(raw["x_test"][..., None], raw["y_test"], 10, name)
  )


def _tfds_instructions(name: str, data_dir: str | None) -> str:
  where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
  return (
      f"TFDS dataset {name!r} is not prepared in {where} and jaxunlearn never downloads at run time. "
      "On a machine with network access run\n"
      f"    tfds build {name} --file_format=array_record --data_dir={where}\n"
      "(the `tfds` command comes with tensorflow-datasets; building image datasets needs TensorFlow "
      f"on that machine), then copy the {where}/{name} folder here and pass data_dir= (or --data-dir)."
  )


def _load_tfds(name: str, data_dir: str | None) -> Splits:
  import tensorflow_datasets as tfds

  splits = []
  for split in ("train", "test"):
    try:
      source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as err:  # tfds raises several types (NotFound, NotImplemented, Assertion)
      raise FileNotFoundError(_tfds_instructions(name, data_dir)) from err
    records = _read_all(source)
    if not records:
      raise ValueError(f"TFDS dataset {name!r} split {split!r} is empty.")
    image_key = "image" if "image" in records[0] else next(k for k in records[0] if k != "label")
    x = np.stack([np.asarray(r[image_key]) for r in records])
    y = np.asarray([int(r["label"]) for r in records])
    if np.issubdtype(x.dtype, np.integer):
      x = x.astype(np.float32) / 255.0
    try:
      num_classes = int(source.dataset_info.features["label"].num_classes)
    except (AttributeError, KeyError, TypeError):
      num_classes = int(y.max()) + 1
    splits.append(_make(x, y, num_classes, TFDS_PREFIX + name))
  return Splits(*splits)


def _read_all(source) -> list:
  n = len(source)
  out: list = []
  chunk = 4096
  for start in range(0, n, chunk):
    keys = list(range(start, min(n, start + chunk)))
    try:
      out.extend(source.__getitems__(keys))
    except (TypeError, AttributeError):
      out.extend(source[k] for k in keys)
  return out


# --------------------------------------------------------------------------------------------
# Forget-set selection
# --------------------------------------------------------------------------------------------


def class_ids(ds: Dataset, classes: int | Sequence[int]) -> np.ndarray:
  """Ids of every example whose label is in ``classes`` (whole-class forgetting).

  Raises:
    ValueError: a class outside ``[0, num_classes)``.
  """
  classes = np.atleast_1d(np.asarray(classes))
  if classes.size == 0:
    raise ValueError("classes must name at least one class.")
  bad = [int(c) for c in classes if not (0 <= int(c) < ds.num_classes) or int(c) != c]
  if bad:
    raise ValueError(f"class label(s) {bad} out of range; {ds.name!r} has classes 0..{ds.num_classes - 1}.")
  return ds.ids[np.isin(ds.y, classes.astype(np.int64))]


def random_ids(ds: Dataset, fraction: float | None = None, *, seed: int, count: int | None = None) -> np.ndarray:
  """Ids of a seeded random ``fraction`` of the examples (at least one), or of exactly ``count``
  examples, sorted. Give one of the two.

  Raises:
    ValueError: ``fraction`` not in (0, 1), ``count`` not in [1, len(ds) - 1], or both or neither.
  """
  if (fraction is None) == (count is None):
    raise ValueError("give exactly one of fraction= and count=.")
  if count is not None:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count < len(ds):
      raise ValueError(f"count must be an integer in [1, {len(ds) - 1}] (something must be retained), got {count!r}.")
    k = int(count)
  else:
    if not (isinstance(fraction, (int, float, np.floating)) and 0.0 < float(fraction) < 1.0):
      raise ValueError(f"fraction must be in (0, 1), got {fraction!r}.")
    k = max(1, int(round(float(fraction) * len(ds))))
    k = min(k, len(ds) - 1)
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(ds.ids, size=k, replace=False))


_INT64 = np.iinfo(np.int64)


def as_ids(ids: int | Sequence[int] | np.ndarray) -> np.ndarray:
  """Example ids as a 1-D ``int64`` array, accepting only integers.

  Accepted: a Python or NumPy integer, a sequence of them, or an integer array of at most one
  dimension. Anything else is refused with the bad entries named, never rounded or split: a
  string (``"17"`` is not ids 1 and 7; parse text with ``read_ids_file``), floats (``3.7`` is not
  id 3, and ``3.0`` is refused too: cast deliberately with ``astype(int)``), booleans (a mask is not
  a list of ids: use ``ds.ids[mask]``), and integers outside the int64 range.

  Raises:
    TypeError: ids that are not integers (the entries are named).
    ValueError: an integer outside int64, or an array with more than one dimension.

  Example:
    >>> from jaxunlearn import data
    >>> data.as_ids([3, 17]).tolist(), data.as_ids(5).tolist()
    ([3, 17], [5])
    >>> data.as_ids([3.7])
    Traceback (most recent call last):
    ...
    TypeError: ids must be integers; got non-integer entries: 3.7 (cast deliberately, e.g. ids.astype(int), if these are ids).
  """
  if isinstance(ids, (str, bytes)):
    raise TypeError(f"ids must be integers, got the string {ids!r}; pass a list of ints (text is parsed by "
                    "read_ids_file or the command line's --ids).")
  if isinstance(ids, (bool, np.bool_)):
    raise TypeError(f"ids must be integers, got the boolean {ids!r}.")
  if isinstance(ids, (int, np.integer)):
    ids = [ids]
  if not isinstance(ids, np.ndarray):
    try:
      items = list(ids)
    except TypeError:
      raise TypeError(f"ids must be an integer or a sequence of integers, got {type(ids).__name__}.") from None
    if all(type(i) is int or isinstance(i, np.integer) and not isinstance(i, np.bool_) for i in items):
      bad_range = [i for i in items if not _INT64.min <= int(i) <= _INT64.max]
      if bad_range:
        raise ValueError(f"ids out of the int64 range: {_show(bad_range)}.")
      return np.asarray([int(i) for i in items], np.int64)
    ids = np.asarray(items, dtype=object) if items else np.zeros(0, np.int64)
  if ids.ndim > 1:
    raise ValueError(f"ids must be one-dimensional, got an array of shape {ids.shape}.")
  ids = ids.reshape(-1)
  kind = ids.dtype.kind
  if kind == "i":
    return ids.astype(np.int64)
  if kind == "u":
    if ids.size and ids.max() > _INT64.max:
      raise ValueError(f"ids out of the int64 range: {_show(ids[ids > _INT64.max])}.")
    return ids.astype(np.int64)
  if kind == "b":
    raise TypeError("ids must be integers, got a boolean array; to select by mask use ds.ids[mask].")
  bad = [i for i in ids.tolist() if type(i) is not int and not (isinstance(i, np.integer) and not isinstance(i, np.bool_))]
  if bad or kind != "O":
    shown = bad if bad else ids.tolist()
    hint = (" (cast deliberately, e.g. ids.astype(int), if these are ids)"
            if all(isinstance(v, (float, np.floating)) for v in shown) else "")
    raise TypeError(f"ids must be integers; got non-integer entries: {_show(shown)}{hint}.")
  return as_ids(list(ids))


def _show(values, limit: int = 10) -> str:
  values = list(values)
  return ", ".join(repr(v) if isinstance(v, (str, bytes)) else str(v) for v in values[:limit]) + (
      f" (and {len(values) - limit} more)" if len(values) > limit else "")


def check_ids(ds: Dataset, ids: Sequence[int] | np.ndarray) -> np.ndarray:
  """Validates explicit ids (integers only, see ``as_ids``): returns them sorted and unique;
  raises ``ValueError`` if unknown or empty."""
  ids = np.unique(as_ids(ids))
  if ids.size == 0:
    raise ValueError("the forget set is empty: give at least one id.")
  ds.positions(ids)  # raises on unknown ids
  return ids


def split_forget(ds: Dataset, forget_ids: Sequence[int] | np.ndarray) -> tuple[Dataset, Dataset]:
  """Splits ``ds`` into ``(forget, retain)``, retain = ds - forget.

  Raises:
    ValueError: empty forget set, unknown ids, or a forget set holding every example.
  """
  ids = check_ids(ds, forget_ids)
  if len(ids) == len(ds):
    raise ValueError(f"the forget set holds all {len(ds)} examples: nothing would be retained.")
  return ds.take(ids), ds.drop(ids)


def flip_labels(ds: Dataset, fraction: float, *, seed: int) -> tuple[Dataset, np.ndarray]:
  """Corrupts a seeded ``fraction`` of labels, each to a different, uniformly drawn class.

  Returns:
    ``(corrupted dataset, ids of the corrupted examples)`` for corrective-unlearning experiments.
  """
  ids = random_ids(ds, fraction, seed=seed)
  rng = np.random.default_rng([seed, 1])
  pos = ds.positions(ids)
  y = ds.y.copy()
  shift = rng.integers(1, ds.num_classes, size=len(pos))
  y[pos] = (y[pos] + shift) % ds.num_classes
  return dataclasses.replace(ds, y=y), ids


def stamp_trigger(
    ds: Dataset,
    fraction: float,
    *,
    seed: int,
    target_label: int,
    patch_size: int = 2,
    value: float = 1.0,
) -> tuple[Dataset, np.ndarray]:
  """Poisons a seeded ``fraction``: stamps a square trigger in the bottom-right corner and relabels.

  The patch is ``patch_size`` wide along every spatial axis (the last ``patch_size`` positions of a
  1-D signal), set to ``value`` in all channels; the poisoned examples get ``target_label``.

  Returns:
    ``(poisoned dataset, ids of the poisoned examples)``.
  """
  if not 0 <= int(target_label) < ds.num_classes:
    raise ValueError(f"target_label {target_label!r} out of range; classes are 0..{ds.num_classes - 1}.")
  spatial = ds.x.shape[1:-1]
  if patch_size < 1 or any(patch_size > s for s in spatial):
    raise ValueError(f"patch_size must be in 1..{min(spatial)}, got {patch_size}.")
  ids = random_ids(ds, fraction, seed=seed)
  pos = ds.positions(ids)
  x = ds.x.copy()
  y = ds.y.copy()
  region = (pos,) + tuple(slice(s - patch_size, s) for s in spatial) + (slice(None),)
  x[region] = value
  y[pos] = target_label
  return dataclasses.replace(ds, x=x, y=y), ids


def parse_forget(spec: str, ds: Dataset, *, seed: int) -> np.ndarray:
  """Selects forget ids from a textual spec: ``class:3``, ``class:3,5``, ``random:0.1`` or ``ids:FILE``.

  ``ids:FILE`` reads one integer id per line (blank lines and ``#`` comments ignored).
  """
  kind, _, arg = spec.partition(":")
  if kind == "class" and arg:
    try:
      classes = [int(c) for c in arg.split(",")]
    except ValueError:
      raise ValueError(f"class spec must list integers, got {arg!r}.") from None
    return class_ids(ds, classes)
  if kind == "random" and arg:
    try:
      fraction = float(arg)
    except ValueError:
      raise ValueError(f"random spec needs a fraction in (0, 1), got {arg!r}.") from None
    return random_ids(ds, fraction, seed=seed)
  if kind == "ids" and arg:
    return check_ids(ds, read_ids_file(arg))
  raise ValueError(f"unknown forget spec {spec!r}; expected class:K[,K...], random:FRACTION or ids:FILE.")


_ID_TOKEN = re.compile(r"[+-]?[0-9]+")


def parse_id_tokens(tokens: Sequence[str], where: Sequence[str]) -> np.ndarray:
  """Parses textual ids: each token must be ASCII digits with an optional sign (``"1_9"``,
  ``"3.0"``, ``"1e3"`` and non-ASCII digits are refused). ``where[i]`` names token ``i`` in errors."""
  out = []
  for token, place in zip(tokens, where):
    if not _ID_TOKEN.fullmatch(token):
      raise ValueError(f"{place}: expected an integer id, got {token!r}.")
    value = int(token)
    if not _INT64.min <= value <= _INT64.max:
      raise ValueError(f"{place}: id {token} is out of the int64 range.")
    out.append(value)
  return np.asarray(out, dtype=np.int64)


def read_ids_file(path: str) -> np.ndarray:
  """Reads one integer id per line (blank lines and ``#`` comments ignored).

  The file is UTF-8 text, with or without a byte-order mark; UTF-16 with a byte-order mark is
  decoded too. Anything else (a directory, binary data, another encoding, a malformed line) raises
  ``ValueError`` naming the file and line.
  """
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except IsADirectoryError:
    raise ValueError(f"{path} is a directory, not a file of ids.") from None
  except FileNotFoundError:
    raise ValueError(f"{path}: no such file of ids.") from None
  except PermissionError:
    raise ValueError(f"{path}: permission denied reading the file of ids.") from None
  if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
    encoding = "utf-16"
  else:
    encoding = "utf-8-sig"
  try:
    text = raw.decode(encoding)
  except UnicodeDecodeError as err:
    raise ValueError(f"{path} is not UTF-8 text (byte {err.start} cannot be decoded); write one integer id per "
                     "line as plain text.") from None
  tokens, where = [], []
  for lineno, line in enumerate(text.splitlines(), 1):
    token = line.split("#", 1)[0].strip()
    if token:
      tokens.append(token)
      where.append(f"{path}:{lineno}")
  return parse_id_tokens(tokens, where)


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(z: np.ndarray) -> np.ndarray:
  """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
  z = np.asarray(z, dtype=np.uint64) + _GOLDEN
  z = (z ^ (z >> np.uint64(30))) * _M1
  z = (z ^ (z >> np.uint64(27))) * _M2
  return z ^ (z >> np.uint64(31))


def id_order(ids: np.ndarray, *, seed: int, epoch: int = 0) -> np.ndarray:
  """A permutation of ``range(len(ids))`` determined by the ids, ``seed`` and ``epoch`` alone.

  Each id gets the key ``mix(mix(seed, epoch) xor id)``; examples are sorted by key. Removing some
  ids leaves the relative order of the others unchanged.
  """
  salt = mix64(mix64(np.array([seed], dtype=np.uint64)) ^ np.array([epoch], dtype=np.uint64))
  keys = mix64(np.asarray(ids, dtype=np.int64).astype(np.uint64) ^ salt)
  return np.lexsort((np.asarray(ids), keys))


def num_batches(n: int, batch_size: int, *, drop_remainder: bool = False) -> int:
  """How many batches ``batches`` yields for ``n`` examples."""
  return n // batch_size if drop_remainder else -(-n // batch_size)


def batches(
    ds: Dataset,
    batch_size: int,
    *,
    seed: int | None,
    epoch: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
  """Yields fixed-shape batches ``{"x", "y", "ids", "mask"}`` of NumPy arrays.

  The order is ``id_order(ids, seed=seed, epoch=epoch)`` when ``shuffle``, else the split's order.
  The last partial batch is padded to ``batch_size`` (inputs and labels zero, ids ``-1``,
  ``mask`` 0) so that a jitted step never recompiles; real examples have ``mask`` 1.

  Args:
    ds: the dataset.
    batch_size: examples per batch (> 0).
    seed: shuffle seed; required when ``shuffle`` (no default seed).
    epoch: epoch number, mixed into the shuffle.
    shuffle: whether to shuffle.
    drop_remainder: drop the last partial batch instead of padding it.

  Example:
    >>> from jaxunlearn import data
    >>> train, _ = data.load("digits")
    >>> b = next(data.batches(train, 128, seed=0))
    >>> b["x"].shape, b["mask"].sum()
    ((128, 8, 8, 1), np.float32(128.0))
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be > 0, got {batch_size}.")
  if len(ds) == 0:
    raise ValueError(f"cannot batch an empty dataset ({ds.name!r}).")
  if shuffle:
    if seed is None:
      raise ValueError("shuffle=True needs an explicit seed.")
    order = id_order(ds.ids, seed=seed, epoch=epoch)
  else:
    order = np.arange(len(ds))
  n = len(ds)
  for b in range(num_batches(n, batch_size, drop_remainder=drop_remainder)):
    idx = order[b * batch_size:(b + 1) * batch_size]
    pad = batch_size - len(idx)
    x, y, ids = ds.x[idx], ds.y[idx], ds.ids[idx]
    mask = np.ones(batch_size, np.float32)
    if pad:
      x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
      y = np.concatenate([y, np.zeros(pad, y.dtype)])
      ids = np.concatenate([ids, -np.ones(pad, ids.dtype)])
      mask[-pad:] = 0.0
    yield {"x": x, "y": y, "ids": ids, "mask": mask}
