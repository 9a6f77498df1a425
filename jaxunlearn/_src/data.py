"""Datasets with stable example ids, their validation, and a deterministic batch iterator.

Every example carries an integer id: a split's examples are numbered ``0..n-1`` in the dataset's
fixed order, so an id names the same example in every run. Shuffling is keyed on ids (a hash of
``(seed, epoch, id)``), never on array positions, so removing examples leaves the relative order
of all others unchanged: the property exact unlearning (SISA) relies on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np


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


INT64 = np.iinfo(np.int64)


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
      bad_range = [i for i in items if not INT64.min <= int(i) <= INT64.max]
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
    if ids.size and ids.max() > INT64.max:
      raise ValueError(f"ids out of the int64 range: {_show(ids[ids > INT64.max])}.")
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
