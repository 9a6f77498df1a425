r"""A k-nearest-neighbour classifier whose forgetting is exact by construction.

The index holds its rows in id order. A query's neighbours are the ``k`` rows of smallest squared
L2 distance, ties broken by the smaller id; its label is the most frequent label among them,
ties broken by the smaller class. ``forget(ids)`` overwrites the rows of those ids with zeros
and marks them absent (their distances are then infinite), so every later answer is the one an
index built without them gives: the remaining rows keep their relative order, the distance of a
query to a row does not depend on the other rows (rows are scored in chunks of a fixed shape),
and the running top-k keeps the lower row first among equal distances (``lax.top_k``'s rule).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from jaxunlearn._src import data as data_lib
from jaxunlearn._src.base import vary, varying_axes


def _scan(rows, sq_norms, valid, queries, *, k: int, chunk: int, base):
  """The ``k`` nearest of ``rows`` (global row numbers from ``base``): ``(distances, rows)``."""
  q_sq = jnp.sum(queries * queries, axis=1)
  axes = varying_axes(jax.typeof(rows))  # inside shard_map: the carry varies as the rows do
  best_d = vary(jnp.full((queries.shape[0], k), jnp.inf, jnp.float32), axes)
  best_i = vary(jnp.full((queries.shape[0], k), -1, jnp.int32), axes)

  def body(c, carry):
    best_d, best_i = carry
    x = jax.lax.dynamic_slice_in_dim(rows, c * chunk, chunk)
    d = q_sq[:, None] - 2.0 * (queries @ x.T) + jax.lax.dynamic_slice_in_dim(sq_norms, c * chunk, chunk)[None]
    d = jnp.where(jax.lax.dynamic_slice_in_dim(valid, c * chunk, chunk)[None], jnp.maximum(d, 0.0), jnp.inf)
    idx = base + c * chunk + jnp.arange(chunk, dtype=jnp.int32)
    return _merge(jnp.concatenate([best_d, d], axis=1),
                  jnp.concatenate([best_i, jnp.broadcast_to(idx[None], d.shape)], axis=1), k)

  return jax.lax.fori_loop(0, rows.shape[0] // chunk, body, (best_d, best_i))


def _merge(d, i, k):
  # Candidates are laid out lower rows first; lax.top_k keeps the earlier of equal values.
  neg, pos = jax.lax.top_k(-d, k)
  return -neg, jnp.take_along_axis(i, pos, axis=1)


@functools.lru_cache(maxsize=32)
def _search(k: int, chunk: int, mesh=None):
  if mesh is None:
    return jax.jit(functools.partial(_scan, k=k, chunk=chunk, base=0))
  axis = mesh.axis_names[0]
  P = jax.sharding.PartitionSpec

  def local(rows, sq_norms, valid, queries):
    base = jax.lax.axis_index(axis) * rows.shape[0]
    d, i = _scan(rows, sq_norms, valid, queries, k=k, chunk=chunk, base=base)
    # Every device's k best, device 0 (the lowest rows) first, merged into the global k best.
    d_all = jax.lax.all_gather(d, axis, axis=1, tiled=True)
    i_all = jax.lax.all_gather(i, axis, axis=1, tiled=True)
    d, i = _merge(d_all, i_all, k)
    return d[None], i[None]  # the same on every device: one copy per device, the first is kept

  mapped = jax.shard_map(local, mesh=mesh, in_specs=(P(axis), P(axis), P(axis), P()), out_specs=(P(axis), P(axis)))
  return jax.jit(lambda *args: tuple(x[0] for x in mapped(*args)))


@functools.partial(jax.jit, donate_argnums=(0, 1, 2))
def _erase(rows, sq_norms, valid, which):
  return rows.at[which].set(0.0), sq_norms.at[which].set(0.0), valid.at[which].set(False)


class KNNClassifier:
  r"""Exact-forgetting k-NN classifier over embeddings (raw inputs flattened, or a model's features).

  Args:
    embeddings: ``[n, d]`` (or ``[n, ...]``, flattened) float array.
    labels: ``[n]`` integer labels.
    ids: ``[n]`` unique example ids (integers; ``jaxunlearn.data.as_ids`` rules).
    k: neighbours per query.
    num_classes: number of classes (default ``max(labels) + 1``).
    chunk: rows scored at once (memory: ``queries x chunk`` distances); the index is padded to a
      multiple of it (per device).
    mesh: a one-axis ``jax.sharding.Mesh`` to shard the rows over (a large index): each device
      finds its own k best, and they are merged in row order, so the answers are those of the
      unsharded index.

  Example:
    >>> import numpy as np
    >>> import jaxunlearn as ju
    >>> knn = ju.KNNClassifier(np.array([[0.0], [1.0], [10.0]]), np.array([0, 0, 1]), [5, 6, 7], k=1)
    >>> knn.predict(np.array([[9.0]])).tolist()
    [1]
    >>> knn.forget([7])
    1
    >>> knn.predict(np.array([[9.0]])).tolist()
    [0]
  """

  def __init__(self, embeddings: ArrayLike, labels: ArrayLike, ids: ArrayLike, *, k: int = 5,
               num_classes: int | None = None, chunk: int = 4096, mesh: jax.sharding.Mesh | None = None):
    x = np.asarray(embeddings, np.float32)
    x = x.reshape(len(x), -1)
    y = np.asarray(labels)
    ids = data_lib.as_ids(ids)
    if not (len(x) == len(y) == len(ids)):
      raise ValueError(f"embeddings, labels and ids must have the same length; got {len(x)}, {len(y)}, {len(ids)}.")
    if len(x) == 0:
      raise ValueError("a kNN index needs at least one example.")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
      raise ValueError("labels must be non-negative integers.")
    if not np.all(np.isfinite(x)):
      raise ValueError("embeddings contain NaN or infinity.")
    if k < 1:
      raise ValueError(f"k must be >= 1, got {k}.")
    self.k, self.chunk = int(k), int(chunk)
    self.num_classes = int(num_classes if num_classes is not None else y.max() + 1)
    if y.max() >= self.num_classes:
      raise ValueError(f"labels go up to {y.max()}, beyond num_classes={self.num_classes}.")
    order = np.argsort(ids, kind="stable")  # rows in id order: ties go to the smaller id
    if np.any(ids[order][1:] == ids[order][:-1]):
      raise ValueError("ids must be unique.")
    n = len(x)
    if mesh is not None and len(mesh.axis_names) != 1:
      raise ValueError(f"the mesh must have one axis (the index's rows), got {mesh.axis_names}.")
    self.mesh = mesh
    parts = 1 if mesh is None else mesh.devices.size
    size = -(-n // (self.chunk * parts)) * self.chunk * parts
    rows = np.zeros((size, x.shape[1]), np.float32)
    rows[:n] = x[order]
    self._ids = np.full(size, -1, np.int64)
    self._ids[:n] = ids[order]
    self._labels = np.zeros(size, np.int32)
    self._labels[:n] = y[order]
    valid = np.zeros(size, bool)
    valid[:n] = True
    self._host_valid, self._n = valid, n
    self._rows = self._place(rows)
    self._sq = self._place(np.sum(rows * rows, axis=1))
    self._valid = self._place(valid)

  def _place(self, a: np.ndarray) -> jax.Array:
    if self.mesh is None:
      return jnp.asarray(a)
    return jax.device_put(a, jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(self.mesh.axis_names[0])))

  def __len__(self) -> int:
    return int(self._host_valid.sum())

  @property
  def ids(self) -> np.ndarray:
    """The ids held, in order."""
    return self._ids[self._host_valid].copy()

  def _rows_of(self, queries: ArrayLike, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    q = np.asarray(queries, np.float32).reshape(len(queries), -1)
    if q.shape[1] != self._rows.shape[1]:
      raise ValueError(f"queries have {q.shape[1]} features, the index {self._rows.shape[1]}.")
    search = _search(self.k, self.chunk, self.mesh)
    out_i, out_d = [], []
    for start in range(0, len(q), batch_size):
      part = q[start:start + batch_size]
      pad = batch_size - len(part) if len(q) > batch_size else 0
      part = np.concatenate([part, np.zeros((pad, q.shape[1]), np.float32)]) if pad else part
      d, i = search(self._rows, self._sq, self._valid, jnp.asarray(part))
      keep = len(part) - pad
      out_d.append(np.asarray(d)[:keep])
      out_i.append(np.asarray(i)[:keep])
    return np.concatenate(out_i), np.concatenate(out_d)

  def kneighbors(self, queries: ArrayLike, *, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """``(ids [q, k], squared distances [q, k])`` of each query's neighbours, nearest first (id
    -1 and distance inf where the index holds fewer than ``k`` examples)."""
    rows, dist = self._rows_of(queries, batch_size)
    return np.where(np.isfinite(dist), self._ids[np.maximum(rows, 0)], -1), dist

  def predict(self, queries: ArrayLike, *, batch_size: int = 1024) -> np.ndarray:
    """The most frequent label among each query's ``k`` neighbours (ties: the smaller class)."""
    rows, dist = self._rows_of(queries, batch_size)
    found = np.isfinite(dist).ravel()
    votes = np.zeros((len(rows), self.num_classes), np.int64)
    np.add.at(votes, (np.repeat(np.arange(len(rows)), self.k)[found], self._labels[rows.ravel()[found]]), 1)
    return np.argmax(votes, axis=1)  # argmax takes the first (smallest) class among equal counts

  def forget(self, ids: ArrayLike) -> int:
    """Removes the examples ``ids`` (their rows are overwritten with zeros and marked absent);
    returns how many were removed. Unknown or already removed ids raise ``ValueError``, naming
    them, and nothing is removed."""
    ids = np.unique(data_lib.as_ids(ids))
    if len(ids) == 0:
      raise ValueError("forget got no ids.")
    held = self._ids[:self._n]  # sorted: the rows are in id order
    pos = np.minimum(np.searchsorted(held, ids), self._n - 1)
    present = (held[pos] == ids) & self._host_valid[pos]
    if not present.all():
      missing = ids[~present]
      raise ValueError(f"ids not in the index: {missing[:20].tolist()}{' ...' if len(missing) > 20 else ''}.")
    rows = pos
    self._host_valid[rows] = False
    # In place (the buffers are donated); the row list is padded to a power of two by repeating
    # its first row (zeroing twice is zeroing once), so request sizes share a few programs.
    padded = np.full(1 << int(np.ceil(np.log2(len(rows)))), rows[0], np.int32)
    padded[:len(rows)] = rows
    self._rows, self._sq, self._valid = _erase(self._rows, self._sq, self._valid, jnp.asarray(padded))
    return len(rows)
