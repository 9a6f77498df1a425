r"""Certified removal for L2-regularised logistic regression (Guo, Goldstein, Hannun and van der
Maaten, "Certified Data Removal from Machine Learning Models", ICML 2020).

Training minimises, for each one-vs-rest column ``k`` (one column for two classes), the perturbed
objective in its sum form

.. math::

  L_b(w; D) = \sum_{i \in D} \log(1 + e^{-y_i x_i^\top w}) + \frac{\lambda n}{2}\|w\|^2 + b^\top w,
  \qquad b \sim \mathcal N(0, \sigma^2 I),

(the paper's mean loss + ``lambda/2 ||w||^2 + b.w/n``, times ``n``) over features scaled to unit
norm, with Newton's method (exact to rounding: the measured gradient residual is recorded).
Removing a set ``R`` takes one Newton step on the remaining data ``D' = D \ R`` at the current
``w``:

.. math::

  w^- = w + H^{-1} g, \quad H = \sum_{j \in D'} s_j(1-s_j) x_j x_j^\top + \lambda |D'| I, \quad
  g = \sum_{i \in R} \nabla \ell(w; x_i, y_i) + \lambda |R| w,

and spends the data-dependent gradient-residual bound
``beta = (1/4) ||X'||_2 ||Delta|| ||X' Delta||`` (``Delta = H^{-1} g``, ``X'`` the remaining
features; ``1/4`` bounds the Lipschitz constant of the logistic loss's second derivative, and
``||X'||_2`` is computed exactly, not by power iteration). Bounds add up over removals (the
residual of a Newton step is the previous residual plus its Taylor remainder). By the paper's
Theorem 3 the released model is (epsilon, delta)-certified while the accumulated bound stays
within ``sigma * epsilon / sqrt(2 log(1.5 / delta))``. A removal that would pass it retrains on
the remaining data with fresh noise instead, and the budget starts again: the model held is never
past its guarantee. With several columns the bound is the L2 norm of the columns' accumulated
bounds (the columns' residuals are orthogonal blocks of one gradient; the reference code sums
them, which is looser).

The guarantee's limits: it covers the linear model given fixed features (a network's frozen
penultimate layer must not itself have seen the removed data, or must be trained on public
data); it is about the released weights, not the retrain/Newton decision or the removal timing;
and it assumes ``||x|| <= 1`` (ensured here) and exact arithmetic (the computation runs in
float64 so that rounding stays far below the bounds).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import math
import numbers
import os
import re
import shutil
import time
import uuid
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from jaxunlearn._src import data as data_lib
from jaxunlearn._src.sisa_files import CheckpointError, canonical, file_digests, fsync_write, read_json, seal
from jaxunlearn._src.sisa_plan import digest

GAMMA = 0.25  # Lipschitz constant of the logistic loss's second derivative (a bound; the paper's value)
FORMAT = 1
_STATE = re.compile(r"state-[0-9a-f]{32}(\.orbax-checkpoint-tmp.*)?")


def budget(sigma: float, epsilon: float, delta: float) -> float:
  r"""The gradient-residual budget ``sigma * epsilon / sqrt(2 log(1.5 / delta))`` (Guo et al. 2020,
  Theorem 3): while the accumulated bound stays within it, the model is (epsilon, delta)-certified.

  Example:
    >>> round(budget(1.0, 1.0, 1e-4), 3)
    0.228
  """
  _check_privacy(sigma, epsilon, delta)
  return float(sigma) * float(epsilon) / math.sqrt(2.0 * math.log(1.5 / float(delta)))


def _check_privacy(sigma: float, epsilon: float, delta: float) -> None:
  for name, value in (("sigma", sigma), ("epsilon", epsilon)):
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
      raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
  if not (isinstance(delta, numbers.Real) and not isinstance(delta, bool) and 0.0 < delta < 1.0):
    raise ValueError(f"delta must lie strictly between 0 and 1, got {delta!r}.")


def _objective(w, x, y, m, b, lam):
  n = jnp.sum(m)
  return jnp.sum(m * jnp.logaddexp(0.0, -y * (x @ w))) + 0.5 * lam * n * jnp.dot(w, w) + jnp.dot(b, w)


def _grad_hess(w, x, y, m, b, lam):
  n = jnp.sum(m)
  s = jax.nn.sigmoid(y * (x @ w))
  g = x.T @ (m * (s - 1.0) * y) + lam * n * w + b
  h = (x * (m * s * (1.0 - s))[:, None]).T @ x + lam * n * jnp.eye(x.shape[1], dtype=x.dtype)
  return g, h


def _newton_column(x, y, m, b, lam, max_iter: int):
  """Damped Newton (Armijo backtracking) from zero to the optimum of one column; stops when the
  Newton decrement reaches rounding level or a line search cannot decrease the objective."""
  f = lambda w: _objective(w, x, y, m, b, lam)  # noqa: E731

  def step(carry):
    w, it, _ = carry
    g, h = _grad_hess(w, x, y, m, b, lam)
    p = -jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(h), g)
    f0, slope = f(w), jnp.dot(g, p)
    t = jax.lax.while_loop(lambda t: (f(w + t * p) > f0 + 1e-4 * t * slope) & (t > 1e-6), lambda t: t * 0.5, 1.0)
    converged = -slope <= 1e-20 * (1.0 + jnp.abs(f0))
    stalled = f(w + t * p) > f0  # rounding level: no decrease left to find
    return jnp.where(stalled, w, w + t * p), it + 1, converged | stalled

  w0 = jnp.zeros(x.shape[1], x.dtype)
  w, _, _ = jax.lax.while_loop(lambda c: (c[1] < max_iter) & ~c[2], step, (w0, 0, False))
  return w


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _fit(x, y, m, b, lam, max_iter: int = 100):
  return jax.vmap(lambda yk, bk: _newton_column(x, yk, m, bk, lam, max_iter), in_axes=(1, 1), out_axes=1)(y, b)


@jax.jit
def _residual(x, y, m, w, b, lam):
  """Per column: the norm of the perturbed objective's gradient on the rows ``m``."""
  n = jnp.sum(m)
  s = jax.nn.sigmoid(y * (x @ w))
  g = x.T @ (m[:, None] * (s - 1.0) * y) + lam * n * w + b
  return jnp.linalg.norm(g, axis=0)


@jax.jit
def _newton_removal(x, y, alive, removed, w, lam):
  """The Newton removal step: ``(new weights, per-column bound, ||X'||_2)``."""
  keep = alive * (1.0 - removed)
  s = jax.nn.sigmoid(y * (x @ w))
  g = x.T @ (removed[:, None] * (s - 1.0) * y) + lam * jnp.sum(removed) * w
  curv = keep[:, None] * s * (1.0 - s)
  eye = jnp.eye(x.shape[1], dtype=x.dtype)
  h = jax.vmap(lambda c: (x * c[:, None]).T @ x + lam * jnp.sum(keep) * eye, in_axes=1)(curv)
  step = jax.vmap(lambda hk, gk: jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(hk), gk),
                  in_axes=(0, 1), out_axes=1)(h, g)
  gram = (x * keep[:, None]).T @ x
  spec = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(gram)[-1], 0.0))
  bound = GAMMA * spec * jnp.linalg.norm(step, axis=0) * jnp.linalg.norm(keep[:, None] * (x @ step), axis=0)
  return w + step, bound, spec


def prepare_features(features: ArrayLike, *, intercept: bool = True) -> np.ndarray:
  """The features the model sees: flattened, with a constant 1 appended when ``intercept``, each
  row scaled to unit L2 norm (a zero row stays zero), in float64."""
  x = np.asarray(features, np.float64)
  x = x.reshape(len(x), -1)
  if not np.all(np.isfinite(x)):
    bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
    raise ValueError(f"features contain NaN or infinity (rows {bad[:10].tolist()}).")
  if intercept:
    x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return np.where(norms > 0, x / np.where(norms > 0, norms, 1.0), 0.0)


@dataclasses.dataclass(frozen=True)
class Removal:
  """What one removal did.

  Attributes:
    kind: ``"newton"`` (one Newton step) or ``"retrain"`` (the step would have passed the budget:
      retrained on the remaining data with fresh noise).
    ids: the ids removed, sorted.
    bound: the gradient-residual bound of the Newton step (computed in both cases; a retrain
      spends instead the measured residual of its fresh optimum).
    spent: the accumulated bound after this removal.
    budget: ``sigma * epsilon / sqrt(2 log(1.5 / delta))``.
    left: ``budget - spent``.
    seconds: wall time of the removal.
  """

  kind: str
  ids: tuple[int, ...]
  bound: float
  spent: float
  budget: float
  left: float
  seconds: float

  def as_dict(self) -> dict:
    return {**dataclasses.asdict(self), "ids": list(self.ids)}


class CertifiedLinear:
  r"""An (epsilon, delta)-certified-removal logistic-regression model (one-vs-rest for more than two
  classes), trained with objective perturbation. Build it with :func:`fit`; remove with
  :meth:`remove`; persist with :meth:`save` and :func:`load` (or :func:`forget` on a directory).

  Attributes:
    lam, sigma, epsilon, delta: regularisation, noise scale and the guarantee.
    num_classes: classes (two classes use one column).
    intercept: whether a constant feature was appended.
    spent, budget, left: the accumulated residual bound, the budget, and what is left.
    retrains: how many removals retrained.
    ledger: one entry per removal (``Removal.as_dict()`` and a timestamp), oldest first.
    tags: the caller's JSON-ready notes (e.g. the dataset), saved with the model.
  """

  def __init__(self, *, x, y, ids, alive, weights, noise, spent_cols, lam, sigma, epsilon, delta, num_classes,
               intercept, seed, retrains, ledger, lineage, tags=None):
    self._x, self._y, self._ids, self._alive = x, y, ids, alive
    self._w, self._b, self._spent = weights, noise, spent_cols
    self.lam, self.sigma, self.epsilon, self.delta = float(lam), float(sigma), float(epsilon), float(delta)
    self.num_classes, self.intercept, self.seed = int(num_classes), bool(intercept), int(seed)
    self.retrains, self.ledger, self.lineage = int(retrains), list(ledger), lineage
    self.tags = dict(tags or {})

  # ----- the guarantee -----
  @property
  def budget(self) -> float:
    return budget(self.sigma, self.epsilon, self.delta)

  @property
  def spent(self) -> float:
    return float(np.linalg.norm(self._spent))

  @property
  def left(self) -> float:
    return self.budget - self.spent

  @property
  def weights(self) -> np.ndarray:
    """``[d, columns]`` float64 weights over :func:`prepare_features`' features."""
    return self._w.copy()

  @property
  def ids(self) -> np.ndarray:
    """The ids of the examples the model currently holds, sorted."""
    return self._ids[self._alive].copy()

  def __len__(self) -> int:
    return int(self._alive.sum())

  def gradient_residual(self) -> float:
    """The exact norm of the perturbed objective's gradient on the remaining data at the current
    weights (what the accumulated bound bounds; computed in O(n d), for audits)."""
    with jax.enable_x64(True):
      r = _residual(self._x, self._y, self._alive.astype(np.float64), self._w, self._b, self.lam)
    return float(np.linalg.norm(np.asarray(r)))

  # ----- prediction -----
  def decision_function(self, features: ArrayLike) -> np.ndarray:
    """``[n, columns]`` scores ``x.w`` on the prepared features (``[n, 1]`` for two classes)."""
    x = prepare_features(features, intercept=self.intercept)
    if x.shape[1] != self._w.shape[0]:
      raise ValueError(f"features have {x.shape[1] - self.intercept} columns, the model was trained on "
                       f"{self._w.shape[0] - self.intercept}.")
    return x @ self._w

  def predict(self, features: ArrayLike) -> np.ndarray:
    """Predicted classes: the highest one-vs-rest score (two classes: 1 where the score is > 0)."""
    z = self.decision_function(features)
    return (z[:, 0] > 0).astype(np.int64) if self.num_classes == 2 else np.argmax(z, axis=1)

  def accuracy(self, features: ArrayLike, labels: ArrayLike) -> float:
    return float(np.mean(self.predict(features) == np.asarray(labels)))

  # ----- removal -----
  def _rows(self, ids) -> np.ndarray:
    ids = np.unique(data_lib.as_ids(ids))
    if len(ids) == 0:
      raise ValueError("remove got no ids (an empty forget set).")
    pos = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)
    known = self._ids[pos] == ids
    if not known.all():
      missing = ids[~known]
      raise ValueError(f"unknown ids (never in the training set): {missing[:20].tolist()}"
                       f"{' ...' if len(missing) > 20 else ''}.")
    gone = ~self._alive[pos]
    if gone.any():
      raise ValueError(f"ids already removed: {ids[gone][:20].tolist()}{' ...' if gone.sum() > 20 else ''}.")
    if len(pos) >= self._alive.sum():
      raise ValueError("cannot remove every remaining example (nothing would be left to train on).")
    return pos

  def remove(self, ids: int | Sequence[int] | np.ndarray) -> Removal:
    """Removes the examples ``ids`` with one Newton step, or retrains with fresh noise if that step
    would pass the budget; their features are erased from the model's memory either way.

    Raises:
      ValueError: no ids, unknown or already removed ids, or every remaining example (nothing is
        changed).
      TypeError: ids that are not integers.
    """
    t0 = time.perf_counter()
    rows = self._rows(ids)
    removed = np.zeros(len(self._ids), np.float64)
    removed[rows] = 1.0
    with jax.enable_x64(True):
      w, bound, _ = _newton_removal(self._x, self._y, self._alive.astype(np.float64), removed, self._w, self.lam)
      w, bound = np.asarray(w), np.asarray(bound)
    spent_cols = self._spent + bound
    alive = self._alive.copy()
    alive[rows] = False
    kind = "newton"
    if not (np.all(np.isfinite(w)) and np.linalg.norm(spent_cols) <= self.budget):
      kind = "retrain"
      noise = _noise(self.seed, self.retrains + 1, self._b.shape, self.sigma)
      w, spent_cols = _train(self._x, self._y, alive, noise, self.lam)
      self._b = noise
      self.retrains += 1
    x, y = self._x.copy(), self._y.copy()
    x[rows], y[rows] = 0.0, 0.0  # the removed examples' features leave the model
    self._x, self._y, self._alive, self._w, self._spent = x, y, alive, w, spent_cols
    out = Removal(kind=kind, ids=tuple(int(i) for i in self._ids[rows]), bound=float(np.linalg.norm(bound)),
                  spent=self.spent, budget=self.budget, left=self.left, seconds=time.perf_counter() - t0)
    self.ledger.append({**out.as_dict(), "at": datetime.datetime.now(datetime.timezone.utc).isoformat()})
    return out

  # ----- persistence -----
  def _arrays(self) -> dict:
    return {"features": self._x, "targets": self._y, "ids": self._ids, "alive": self._alive, "weights": self._w,
            "noise": self._b, "spent": self._spent}

  def _meta(self) -> dict:
    return {"lam": self.lam, "sigma": self.sigma, "epsilon": self.epsilon, "delta": self.delta,
            "num_classes": self.num_classes, "intercept": self.intercept, "seed": self.seed,
            "retrains": self.retrains, "lineage": self.lineage, "tags": self.tags}

  def save(self, directory: str) -> None:
    """Writes the model and its removal ledger to ``directory`` atomically (orbax checkpoint, then
    a sealed ``certified.json`` switched by rename; older states, which hold removed examples'
    features, are deleted after the switch). Refuses a directory holding another model, or a later
    state of this one (its ledger has removals this model lacks): a deletion is never undone."""
    from jaxunlearn._src.sisa_store import Store

    directory = os.path.abspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
      raise ValueError(f"{directory} is a file, not a directory.")
    os.makedirs(directory, exist_ok=True)
    with Store(directory, 0).locked():
      _save(self, directory)


def _noise(seed: int, generation: int, shape, sigma: float) -> np.ndarray:
  rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(generation), 0xCE27])
  return sigma * rng.standard_normal(shape)


def _train(x, y, alive, noise, lam) -> tuple[np.ndarray, np.ndarray]:
  """Fresh optimum and its measured residual per column (the spend a retrain starts from)."""
  with jax.enable_x64(True):
    m = alive.astype(np.float64)
    w = _fit(x, y, m, noise, lam)
    r = _residual(x, y, m, w, noise, lam)
    return np.asarray(w), np.asarray(r)


def fit(features: ArrayLike, labels: ArrayLike, ids: ArrayLike, *, lam: float = 1e-3, sigma: float = 1.0,
        epsilon: float = 1.0, delta: float = 1e-4, num_classes: int | None = None, intercept: bool = True,
        seed: int = 0, tags: dict | None = None) -> CertifiedLinear:
  r"""Trains a certified-removal logistic regression with objective perturbation.

  Args:
    features: ``[n, d]`` features (e.g. a frozen network's penultimate layer); flattened, given a
      constant column when ``intercept``, scaled to unit norm (:func:`prepare_features`).
    labels: ``[n]`` integer labels in ``[0, num_classes)``.
    ids: ``[n]`` unique integer example ids (what :meth:`CertifiedLinear.remove` takes).
    lam: L2 regularisation ``lambda`` (of the mean loss); larger: smaller Newton bounds, lower fit.
    sigma: standard deviation of the perturbation ``b``; larger: more removals per budget, lower
      accuracy.
    epsilon: the guarantee's epsilon.
    delta: the guarantee's delta.
    num_classes: classes (default ``max(labels) + 1``); two classes train one logistic column,
      more train one-vs-rest columns, each with its own noise column.
    intercept: append a constant feature before scaling.
    seed: seed of the noise (retrains draw fresh noise from it and their count).
    tags: JSON-ready notes saved with the model (e.g. where the features came from).

  Returns:
    The trained :class:`CertifiedLinear`; ``spent`` starts at the measured gradient residual of
    the optimum (rounding only).

  Example:
    >>> import numpy as np
    >>> from jaxunlearn import certified
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 5)); y = (x[:, 0] > 0).astype(int)
    >>> model = certified.fit(x, y, np.arange(200), lam=1e-2, sigma=1.0)
    >>> model.accuracy(x, y) > 0.9
    True
    >>> r = model.remove([3, 7])
    >>> r.kind, r.spent <= r.budget, len(model)
    ('newton', True, 198)
  """
  _check_privacy(sigma, epsilon, delta)
  if not (isinstance(lam, numbers.Real) and not isinstance(lam, bool) and math.isfinite(lam) and lam > 0):
    raise ValueError(f"lam must be a positive finite number (the guarantee needs strong convexity), got {lam!r}.")
  x = prepare_features(features, intercept=intercept)
  labels = np.asarray(labels)
  ids = data_lib.as_ids(ids)
  if not (len(x) == len(labels) == len(ids)):
    raise ValueError(f"features, labels and ids must have the same length; got {len(x)}, {len(labels)}, {len(ids)}.")
  if len(x) < 2:
    raise ValueError("certified removal needs at least two training examples.")
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
    raise ValueError("labels must be a 1-D array of non-negative integers.")
  k = int(num_classes if num_classes is not None else labels.max() + 1)
  if k < 2 or labels.max() >= k:
    raise ValueError(f"need 2 <= num_classes and labels < num_classes; got num_classes={k}, max label "
                     f"{labels.max()}.")
  order = np.argsort(ids, kind="stable")
  if np.any(ids[order][1:] == ids[order][:-1]):
    raise ValueError("ids must be unique.")
  x, labels, ids = x[order], labels[order], ids[order]
  y = (np.where(labels == 1, 1.0, -1.0)[:, None] if k == 2 else
       np.where(labels[:, None] == np.arange(k)[None], 1.0, -1.0))
  alive = np.ones(len(x), bool)
  noise = _noise(seed, 0, (x.shape[1], y.shape[1]), sigma)
  w, spent = _train(x, y, alive, noise, lam)
  return CertifiedLinear(x=x, y=y, ids=ids, alive=alive, weights=w, noise=noise, spent_cols=spent, lam=lam,
                         sigma=sigma, epsilon=epsilon, delta=delta, num_classes=k, intercept=intercept, seed=seed,
                         retrains=0, ledger=[], lineage=uuid.uuid4().hex, tags=tags)


# ----- the directory -----
# D/certified.json     sealed: format, settings, lineage, ledger, the live state's name, its digest
#                      and every file's sha256 (switched by an fsynced rename)
# D/state-HEX/         the live orbax checkpoint (arrays)
# D/pending.json       a deletion request being carried out by forget() (written first, removed last)
# D/.lock              the writer lock


def _read_record(directory: str) -> dict | None:
  path = os.path.join(directory, "certified.json")
  record = read_json(path)
  if record is None:
    return None
  if not isinstance(record, dict) or record.get("format") != FORMAT or "digest" not in record:
    raise CheckpointError(f"{path} is not a certified-removal record of format {FORMAT}.")
  if seal(record)["digest"] != record["digest"]:
    raise CheckpointError(f"{path} was modified after it was written (its digest does not match its content).")
  return record


def _fault(point: str) -> None:
  from jaxunlearn._src import sisa_store

  sisa_store.fault(point)  # the fault-injection hook shared with SISA (does nothing outside tests)


def _save(model: CertifiedLinear, directory: str) -> None:
  import orbax.checkpoint as ocp

  old = _read_record(directory)
  if old is not None:
    if old["meta"]["lineage"] != model.lineage:
      raise ValueError(f"{directory} holds another certified model (trained separately); save to a new directory.")
    if old["ledger"] != model.ledger[:len(old["ledger"])]:
      raise ValueError(f"{directory} holds removals this model does not have (it is an older copy); load the "
                       "directory instead, so that no deletion is undone.")
  arrays = model._arrays()
  state_digest = digest(arrays)
  name = "state-" + uuid.uuid4().hex
  path = os.path.join(directory, name)
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(path, arrays)
  ckpt.wait_until_finished()
  ckpt.close()
  _fault("certified:state_written")
  record = seal({"format": FORMAT, "meta": model._meta(), "ledger": model.ledger, "state": name,
                 "state_digest": state_digest, "files": file_digests(path),
                 "shapes": {k: [list(v.shape), v.dtype.str] for k, v in arrays.items()}})
  fsync_write(os.path.join(directory, "certified.json"), canonical(record))
  _fault("certified:switched")
  _sweep(directory, keep=name)
  _fault("certified:swept")


def _sweep(directory: str, keep: str) -> None:
  """Deletes older states (they hold removed examples' features); leaves entries we do not own."""
  for entry in os.listdir(directory):
    if entry != keep and _STATE.fullmatch(entry):
      shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)


def load(directory: str) -> CertifiedLinear:
  """Reads a model saved by :meth:`CertifiedLinear.save`, checking every file's sha256 before
  orbax reads it and the state's digest after.

  Raises:
    FileNotFoundError: no model in ``directory``.
    CheckpointError: a missing, corrupted or edited file, or an interrupted :func:`forget`
      (the message says how to finish it).
  """
  directory = os.path.abspath(directory)
  pending = _read_pending(directory)
  if pending:
    raise CheckpointError(f"{directory} has an interrupted deletion request (ids {pending[:20]}); finish it with "
                          "certified.forget(directory) or `jaxunlearn certified forget --dir D --resume`.")
  return _load(directory)


def _load(directory: str) -> CertifiedLinear:
  import orbax.checkpoint as ocp

  record = _read_record(directory)
  if record is None:
    raise FileNotFoundError(f"no certified model in {directory} (certified.json is missing).")
  path = os.path.join(directory, record["state"])
  if not os.path.isdir(path):
    raise CheckpointError(f"checkpoint {path} is missing.")
  found = file_digests(path)
  for rel, want in record["files"].items():
    if found.get(rel) != want:
      raise CheckpointError(f"checkpoint file {os.path.join(path, rel)} is "
                            f"{'missing' if rel not in found else 'corrupted (sha256 mismatch)'}.")
  template = {k: jax.ShapeDtypeStruct(tuple(s), np.dtype(d)) for k, (s, d) in record["shapes"].items()}
  ckpt = ocp.StandardCheckpointer()
  try:
    with jax.enable_x64(True):
      arrays = {k: np.asarray(v) for k, v in ckpt.restore(path, template).items()}
  except Exception as err:  # orbax raises many types for damaged files
    raise CheckpointError(f"checkpoint {path} is unreadable: {type(err).__name__}: {err}") from None
  finally:
    ckpt.close()
  if digest(arrays) != record["state_digest"]:
    raise CheckpointError(f"checkpoint {path} does not hold the state recorded at save (digest mismatch).")
  meta = record["meta"]
  return CertifiedLinear(x=arrays["features"], y=arrays["targets"], ids=arrays["ids"], alive=arrays["alive"],
                         weights=arrays["weights"], noise=arrays["noise"], spent_cols=arrays["spent"],
                         ledger=record["ledger"], **meta)


def _read_pending(directory: str) -> list[int]:
  path = os.path.join(directory, "pending.json")
  try:
    with open(path) as f:
      return [int(i) for i in json.load(f)["ids"]]
  except FileNotFoundError:
    return []
  except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
    raise CheckpointError(f"{path} is corrupted ({err}); it held an unfinished deletion request: restore it, or "
                          "pass its ids again to forget().") from None


def forget(directory: str, ids: int | Sequence[int] | np.ndarray | None = None, *,
           wait: float | None = None) -> Removal | None:
  """Removes ``ids`` from the model saved in ``directory`` as one crash-safe transaction: the
  request is written (fsynced) before any work and cleared only after the new state is switched
  in, so an interrupted call is finished by the next (``ids=None`` only finishes it).

  Returns:
    The :class:`Removal`, or ``None`` when there was nothing to do.
  """
  from jaxunlearn._src.sisa_store import Store

  directory = os.path.abspath(directory)
  if not os.path.isfile(os.path.join(directory, "certified.json")):
    raise FileNotFoundError(f"no certified model in {directory} (certified.json is missing).")
  with Store(directory, 0).locked(wait):
    model = _load(directory)
    pending = _read_pending(directory)
    removed = {i for entry in model.ledger for i in entry["ids"]}
    todo = [i for i in pending if i not in removed]  # a crash after the switch leaves done ids here
    if ids is not None:
      new = np.unique(data_lib.as_ids(ids))
      if len(new) == 0:
        raise ValueError("forget got no ids (an empty forget set).")
      model._rows(new)  # unknown or already removed ids are refused before anything is written
      todo = sorted(set(todo) | set(new.tolist()))
    pending_path = os.path.join(directory, "pending.json")
    if not todo:  # nothing left to remove: finish an interrupted request's cleanup
      _sweep(directory, keep=_read_record(directory)["state"])
      if pending:
        os.remove(pending_path)
      return None
    fsync_write(pending_path, json.dumps({"ids": todo}))
    _fault("certified:pending")
    result = model.remove(todo)
    _save(model, directory)
    os.remove(pending_path)
    return result
