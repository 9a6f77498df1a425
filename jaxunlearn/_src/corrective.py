r"""Corrective unlearning's first half: finding the harmful training points (poisoned or mislabelled)
with an outlier detector, class by class, so that they can be unlearned.

A poisoned or mislabelled example carries a label that its content does not support: among the
examples of the class it claims, it is an outlier. ``detect`` scores every example against the
others of its (claimed) class with

* **Local Outlier Factor** (Breunig, Kriegel, Ng and Sander, SIGMOD
  2000): ``LOF_k(x) = mean_{o in N_k(x)} lrd_k(o) / lrd_k(x)``, where ``lrd_k`` is the inverse mean
  reachability distance to the ``k`` nearest neighbours. Inliers score about 1; the default flag
  is ``LOF > 1.5`` (scikit-learn's ``contamination="auto"``).
* **Isolation Forest** (Liu, Ting and Zhou, ICDM 2008): ``s(x) = 2^{-E[h(x)] / c(n)}``, ``h`` the
  path length that isolates ``x`` in random trees, ``c(n)`` its mean for ``n`` points. Inliers
  score below about 0.5; the default flag is ``s > 0.5`` (the paper's and scikit-learn's rule).

Both come from scikit-learn. Features are standardised (each column over all examples) before
scoring; a per-example loss, when given, is appended as one more standardised column.

Limits: a detector finds what is *unusual within a class*. A poison that forms a dense cluster of
its own (many copies of one trigger pattern in feature space where the trigger dominates) can look
like an inlier; a mislabelled example close to its claimed class looks clean. The benchmark
(``benchmarks/results/corrective.md``) measures precision and recall on both corruptions.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import ArrayLike

from jaxunlearn._src import data as data_lib

METHODS = ("lof", "iforest")


@dataclasses.dataclass(frozen=True)
class Detection:
  """The result of :func:`detect`.

  Attributes:
    method: ``"lof"`` or ``"iforest"``.
    ids: the flagged ids, most outlying first.
    scores: one score per input row (in input order); higher is more outlying.
    flagged: boolean mask of the input rows that were flagged.
    threshold: the score above which a row was flagged (``None`` when ``fraction`` chose them).
  """

  method: str
  ids: np.ndarray
  scores: np.ndarray
  flagged: np.ndarray
  threshold: float | None

  def precision_recall(self, true_ids: ArrayLike) -> tuple[float, float]:
    """``(precision, recall)`` of the flagged ids against the truly harmful ``true_ids``
    (precision is 1 when nothing is flagged, recall 1 when nothing is harmful)."""
    true_ids = data_lib.as_ids(true_ids)
    hit = np.isin(self.ids, true_ids).sum()
    precision = float(hit / len(self.ids)) if len(self.ids) else 1.0
    recall = float(hit / len(np.unique(true_ids))) if len(true_ids) else 1.0
    return precision, recall


def _standardise(x: np.ndarray) -> np.ndarray:
  sd = x.std(axis=0)
  keep = sd > 0
  return (x[:, keep] - x[:, keep].mean(axis=0)) / sd[keep]


def detect(
    features: ArrayLike,
    labels: ArrayLike,
    ids: ArrayLike,
    *,
    method: str = "lof",
    loss: ArrayLike | None = None,
    fraction: float | None = None,
    n_neighbors: int = 20,
    seed: int = 0,
) -> Detection:
  r"""Flags the examples that are outliers within their own (claimed) class.

  Args:
    features: ``[n, ...]`` per-example features, flattened: raw inputs, or a model's embeddings.
    labels: ``[n]`` the labels the examples carry (the possibly corrupted ones).
    ids: ``[n]`` unique integer ids.
    method: ``"lof"`` (Local Outlier Factor) or ``"iforest"`` (Isolation Forest).
    loss: optional ``[n]`` per-example losses of a model trained on the data, appended as one
      standardised feature.
    fraction: flag this fraction of all examples, the highest scores first (``None``: each
      detector's own rule, LOF > 1.5, Isolation Forest score > 0.5).
    n_neighbors: LOF's ``k`` (capped at the class size minus one).
    seed: Isolation Forest's random state.

  Returns:
    A :class:`Detection`. Classes with fewer than three examples are never flagged (score 0).

  Raises:
    ValueError: mismatched lengths, NaN features, an unknown method, or a fraction outside (0, 1).

  Example:
    >>> import numpy as np
    >>> from jaxunlearn import corrective
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(60, 2)); y = np.zeros(60, int)
    >>> x[7] = [8.0, 8.0]                       # one point far from its class
    >>> found = corrective.detect(x, y, np.arange(60))
    >>> int(found.ids[0]), round(float(found.scores[7]), 1)   # the most outlying first
    (7, 7.6)
  """
  if method not in METHODS:
    raise ValueError(f"unknown detector {method!r}; known: {', '.join(METHODS)}.")
  x = np.asarray(features, np.float64)
  x = x.reshape(len(x), -1)
  y = np.asarray(labels)
  ids = data_lib.as_ids(ids)
  if not (len(x) == len(y) == len(ids)):
    raise ValueError(f"features, labels and ids must have the same length; got {len(x)}, {len(y)}, {len(ids)}.")
  if len(x) == 0:
    raise ValueError("detect got no examples.")
  if len(np.unique(ids)) != len(ids):
    raise ValueError("ids must be unique.")
  if not np.all(np.isfinite(x)):
    raise ValueError("features contain NaN or infinity.")
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise ValueError("labels must be a 1-D integer array.")
  if loss is not None:
    loss = np.asarray(loss, np.float64).reshape(-1)
    if len(loss) != len(x) or not np.all(np.isfinite(loss)):
      raise ValueError(f"loss must hold one finite value per example ({len(x)}), got shape {loss.shape}.")
    x = np.concatenate([x, loss[:, None]], axis=1)
  if fraction is not None and not 0.0 < fraction < 1.0:
    raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction!r}.")
  if n_neighbors < 1:
    raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}.")
  from sklearn.ensemble import IsolationForest
  from sklearn.neighbors import LocalOutlierFactor

  x = _standardise(x)
  scores = np.zeros(len(x))
  for c in np.unique(y):
    rows = np.flatnonzero(y == c)
    if len(rows) < 3:
      continue
    if method == "lof":
      lof = LocalOutlierFactor(n_neighbors=min(n_neighbors, len(rows) - 1)).fit(x[rows])
      scores[rows] = -lof.negative_outlier_factor_
    else:
      forest = IsolationForest(random_state=seed).fit(x[rows])
      scores[rows] = -forest.score_samples(x[rows])
  if fraction is None:
    threshold = 1.5 if method == "lof" else 0.5
    flagged = scores > threshold
  else:
    threshold = None
    flagged = np.zeros(len(x), bool)
    flagged[np.argsort(-scores, kind="stable")[: int(round(fraction * len(x)))]] = True
  order = np.flatnonzero(flagged)[np.argsort(-scores[flagged], kind="stable")]
  return Detection(method=method, ids=ids[order], scores=scores, flagged=flagged, threshold=threshold)
