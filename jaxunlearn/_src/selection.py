"""Forget-set selection (classes, random ids) and corrupted data for corrective unlearning."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxunlearn._src.data import Dataset, check_ids


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


def add_trigger(x: np.ndarray, *, patch_size: int = 2, value: float = 1.0) -> np.ndarray:
  """A copy of the inputs ``x`` (``[n, *spatial, channels]``) with the square trigger patch of
  :func:`stamp_trigger` set: the last ``patch_size`` positions along every spatial axis, all
  channels, set to ``value``. Stamping test inputs this way measures a backdoor's attack success.

  Example:
    >>> import numpy as np
    >>> from jaxunlearn import data
    >>> data.add_trigger(np.zeros((1, 3, 3, 1)), patch_size=1)[0, :, :, 0].tolist()
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
  """
  x = np.array(x, copy=True)
  spatial = x.shape[1:-1]
  if patch_size < 1 or any(patch_size > s for s in spatial):
    raise ValueError(f"patch_size must be in 1..{min(spatial)}, got {patch_size}.")
  x[(slice(None),) + tuple(slice(s - patch_size, s) for s in spatial) + (slice(None),)] = value
  return x


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
  x[pos] = add_trigger(x[pos], patch_size=patch_size, value=value)
  y[pos] = target_label
  return dataclasses.replace(ds, x=x, y=y), ids
