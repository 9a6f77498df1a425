"""Loading datasets by name: the embedded ones (scikit-learn's digits, MNIST-1D generated) and
TensorFlow Datasets read through ``tfds.data_source`` (no TensorFlow, no download at run time)."""

from __future__ import annotations

import os
import random as _pyrandom

import numpy as np

from jaxunlearn._src.data import Dataset, Splits

EMBEDDED_DATASETS = ("digits", "mnist1d")
TFDS_PREFIX = "tfds:"


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
