"""Evaluation metrics for unlearning, computed on the host from logits (NumPy, float64); the
NeurIPS 2023 score is in ``neurips``.

Every function takes logits (``[n, C]``) or per-example scores, so it applies to any model and
backend; logits come from ``jaxunlearn.training.predict``.
"""

from __future__ import annotations

import numpy as np
from scipy import special

def log_softmax(logits) -> np.ndarray:
  z = np.asarray(logits, np.float64)
  if z.ndim != 2:
    raise ValueError(f"logits must have shape [n, classes], got {z.shape}.")
  if not np.all(np.isfinite(z)):
    raise ValueError("logits contain NaN or inf.")
  return special.log_softmax(z, axis=-1)


def accuracy(logits, labels) -> float:
  """Top-1 accuracy: mean of ``argmax(logits) == labels``."""
  logits = np.asarray(logits)
  labels = np.asarray(labels)
  if len(logits) != len(labels) or len(labels) == 0:
    raise ValueError(f"need the same, non-zero number of logits and labels; got {len(logits)} and {len(labels)}.")
  return float(np.mean(np.argmax(logits, axis=-1) == labels))


def per_example_loss(logits, labels) -> np.ndarray:
  r"""Cross-entropy per example, :math:`-\log p(y_i | x_i)`."""
  logp = log_softmax(logits)
  return -logp[np.arange(len(logp)), np.asarray(labels)]


def entropy(logits) -> np.ndarray:
  r"""Prediction entropy per example in nats, :math:`-\sum_c p_c \log p_c`."""
  logp = log_softmax(logits)
  return -np.sum(np.exp(logp) * logp, axis=-1)


def kl_divergence(p_logits, q_logits) -> float:
  r"""Mean over examples of :math:`\mathrm{KL}(p\,\|\,q) = \sum_c p_c \log(p_c / q_c)` in nats."""
  lp, lq = log_softmax(p_logits), log_softmax(q_logits)
  if lp.shape != lq.shape:
    raise ValueError(f"logit shapes differ: {lp.shape} and {lq.shape}.")
  return float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=-1)))


def js_divergence(p_logits, q_logits) -> float:
  r"""Mean Jensen-Shannon divergence between the softmax outputs, base 2 (bounded by 1).

  .. math:: \mathrm{JS}(p, q) = \tfrac12 \mathrm{KL}(p\,\|\,m) + \tfrac12 \mathrm{KL}(q\,\|\,m),
            \quad m = \tfrac12 (p + q)

  This is the standard, symmetric JS. (Widely copied "ZRF" code computes ``KL(m || p)``
  instead, which is neither symmetric nor bounded by 1.)
  """
  lp, lq = log_softmax(p_logits), log_softmax(q_logits)
  if lp.shape != lq.shape:
    raise ValueError(f"logit shapes differ: {lp.shape} and {lq.shape}.")
  p, q = np.exp(lp), np.exp(lq)
  lm = np.log(0.5 * (p + q))
  js = 0.5 * np.sum(p * (lp - lm), axis=-1) + 0.5 * np.sum(q * (lq - lm), axis=-1)
  return float(np.mean(js) / np.log(2.0))


def activation_distance(p_logits, q_logits) -> float:
  r"""Mean L2 distance between the softmax outputs, :math:`\frac1n\sum_i \|p_i - q_i\|_2`
  (Chundawat et al., AAAI 2023)."""
  p, q = np.exp(log_softmax(p_logits)), np.exp(log_softmax(q_logits))
  return float(np.mean(np.linalg.norm(p - q, axis=-1)))


def zrf_score(model_logits, random_logits) -> float:
  r"""Zero Retrain Forgetting score (Chundawat et al., AAAI 2023) with the correct JS:
  :math:`1 - \frac1n \sum_i \mathrm{JS}(p_i, r_i)` against a randomly initialised model's outputs
  :math:`r`. 1 means indistinguishable from an untrained model on these inputs."""
  return 1.0 - js_divergence(model_logits, random_logits)


def auc(positive_scores, negative_scores) -> float:
  r"""Area under the ROC curve: :math:`P(s^+ > s^-) + \tfrac12 P(s^+ = s^-)` (Mann-Whitney U)."""
  pos = np.asarray(positive_scores, np.float64).ravel()
  neg = np.asarray(negative_scores, np.float64).ravel()
  if pos.size == 0 or neg.size == 0:
    raise ValueError("auc needs at least one positive and one negative score.")
  ranks = _average_ranks(np.concatenate([pos, neg]))
  u = np.sum(ranks[: pos.size]) - pos.size * (pos.size + 1) / 2.0
  return float(u / (pos.size * neg.size))


def _average_ranks(x: np.ndarray) -> np.ndarray:
  order = np.argsort(x, kind="mergesort")
  ranks = np.empty(len(x), np.float64)
  sorted_x = x[order]
  start = 0
  for end in range(1, len(x) + 1):
    if end == len(x) or sorted_x[end] != sorted_x[start]:
      ranks[order[start:end]] = 0.5 * (start + end - 1) + 1.0
      start = end
  return ranks


def loss_threshold_mia(member_losses, nonmember_losses) -> dict[str, float]:
  """Loss-threshold membership inference (Yeom et al., CSF 2018): members have lower loss.

  Returns:
    ``{"auc": AUC of -loss as a member score, "accuracy": best balanced accuracy over all
    thresholds}``. 0.5 means the attack cannot tell the two sets apart.
  """
  m = np.asarray(member_losses, np.float64).ravel()
  n = np.asarray(nonmember_losses, np.float64).ravel()
  a = auc(-m, -n)
  thresholds = np.unique(np.concatenate([m, n]))
  tpr = np.searchsorted(np.sort(m), thresholds, side="right") / m.size  # loss <= t predicted member
  fpr = np.searchsorted(np.sort(n), thresholds, side="right") / n.size
  best = float(np.max(0.5 * (tpr + 1.0 - fpr)))
  return {"auc": a, "accuracy": max(best, 0.5)}


def logistic_mia(retain_features, test_features, forget_features, *, seed: int, n_splits: int = 5) -> dict[str, float]:
  """Logistic-regression membership attack trained retain (member) vs test (non-member).

  As in the SSD and SCRUB papers: the attack is fit on per-example features (loss, entropy, or
  both as columns) of an equal number of retain and test examples, its AUC estimated by
  ``n_splits``-fold stratified cross-validation, then applied to the forget set.

  Returns:
    ``{"cv_auc": cross-validated attack AUC, "forget_member_rate": share of forget examples the
    attack calls members}``. After good unlearning the forget rate matches the retrained model's.
  """
  from sklearn.linear_model import LogisticRegression
  from sklearn.model_selection import StratifiedKFold

  def as2d(f):
    f = np.asarray(f, np.float64)
    return f[:, None] if f.ndim == 1 else f

  r, t, fo = as2d(retain_features), as2d(test_features), as2d(forget_features)
  rng = np.random.default_rng(seed)
  k = min(len(r), len(t))
  if k < n_splits:
    raise ValueError(f"logistic_mia needs at least {n_splits} retain and test examples, got {len(r)} and {len(t)}.")
  r = r[rng.choice(len(r), k, replace=False)]
  t = t[rng.choice(len(t), k, replace=False)]
  x = np.concatenate([r, t])
  y = np.concatenate([np.ones(k), np.zeros(k)])
  scores = np.zeros(len(y))
  for train_idx, test_idx in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(x, y):
    clf = LogisticRegression().fit(x[train_idx], y[train_idx])
    scores[test_idx] = clf.decision_function(x[test_idx])
  clf = LogisticRegression().fit(x, y)
  return {
      "cv_auc": auc(scores[y == 1], scores[y == 0]),
      "forget_member_rate": float(np.mean(clf.predict(fo) == 1)),
  }


# ----------------------------------------------------------------------------------------------
# NeurIPS 2023 Machine Unlearning Challenge score
# ----------------------------------------------------------------------------------------------
