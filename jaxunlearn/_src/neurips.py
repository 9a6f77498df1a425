"""The NeurIPS 2023 machine-unlearning challenge's evaluation: per-example epsilons from the
logit-scaled confidences of N unlearned and N retrained models, forget quality, and the score."""

from __future__ import annotations

import numpy as np
from scipy import special

from jaxunlearn._src.metrics import log_softmax

DELTA = 1e-5  # NeurIPS 2023 challenge's delta
EPSILON_CAP = 50.0
_THRESHOLDS_PER_UNIT = 100


def logit_scaled_confidence(logits, labels) -> np.ndarray:
  r"""Per-example :math:`\log p_y - \log(1 - p_y)`, computed stably in float64 (LiRA's score)."""
  logp = log_softmax(logits)
  idx = np.arange(len(logp))
  labels = np.asarray(labels)
  log_correct = logp[idx, labels]
  others = logp.copy()
  others[idx, labels] = -np.inf
  log_wrong = special.logsumexp(others, axis=-1)
  return log_correct - log_wrong


def _rates_single(pos: np.ndarray, neg: np.ndarray):
  lo, hi = min(pos.min(), neg.min()), max(pos.max(), neg.max())
  thr = np.linspace(lo, hi, max(int(np.ceil((hi - lo) * _THRESHOLDS_PER_UNIT)), 1))
  tpr = np.mean(pos[:, None] >= thr[None, :], axis=0)
  fpr = np.mean(neg[:, None] >= thr[None, :], axis=0)
  return tpr, 1.0 - tpr, fpr, 1.0 - fpr


def _rates_double(pos: np.ndarray, neg: np.ndarray):
  # Two thresholds: predict "positive" between them, with the peakier distribution as positive.
  pos_w, neg_w = np.ptp(pos), np.ptp(neg)
  if pos_w >= neg_w:
    pos, neg = neg, pos
  width = min(pos_w, neg_w)
  buffer = 2.0
  lo, hi = pos.min() + width - buffer, pos.max() + buffer
  right = np.linspace(lo, hi, max(int(np.ceil((hi - lo) * _THRESHOLDS_PER_UNIT)), 1))
  n_left = int(np.ceil(2 * buffer * _THRESHOLDS_PER_UNIT))
  offsets = np.linspace(-width - buffer, -width + buffer, n_left)
  left = (right[:, None] + offsets[None, :]).ravel()
  right = np.repeat(right, n_left)

  def predicted_pos(c):
    return np.mean((left[None, :] <= c[:, None]) & (c[:, None] <= right[None, :]), axis=0)

  tpr, fpr = predicted_pos(pos), predicted_pos(neg)
  return tpr, 1.0 - tpr, fpr, 1.0 - fpr


def _epsilon(pos: np.ndarray, neg: np.ndarray, delta: float) -> float:
  widths = sorted([np.ptp(pos), np.ptp(neg)])
  if widths[1] == 0 or widths[0] / widths[1] < 0.01:
    return EPSILON_CAP  # one distribution is (almost) a point mass: treat as fully distinguishable
  rates = [_rates_double(pos, neg), _rates_single(pos, neg)]
  tpr, fnr, fpr, tnr = (np.concatenate([r[i] for r in rates]) for i in range(4))
  eps = np.zeros_like(tpr)
  perfect = (fpr + fnr == 0) & (tpr + tnr == 2)
  eps[perfect] = np.inf
  usable = ~perfect & (fpr * fnr > 0)
  with np.errstate(divide="ignore", invalid="ignore"):
    e1 = np.log(1 - delta - fpr[usable]) - np.log(fnr[usable])
    e2 = np.log(1 - delta - fnr[usable]) - np.log(fpr[usable])
  # fmax ignores a NaN beside a number; a rule with both NaN (FPR = FNR = 1) gives no evidence: 0.
  eps[usable] = np.clip(np.nan_to_num(np.fmax(e1, e2), nan=0.0), 0, None)
  kept = eps[usable | perfect]
  if kept.size == 0:
    return 0.0
  return float(np.clip(np.nanmax(kept), 0, EPSILON_CAP))


def forget_quality(unlearned_confs: np.ndarray, retrained_confs: np.ndarray, *, delta: float = DELTA) -> tuple[float, np.ndarray]:
  r"""Forget quality of the NeurIPS 2023 Machine Unlearning Challenge, and epsilon per example.

  For each forget example, the N unlearned and N retrained models' logit-scaled confidences are
  two samples; the positive class is the one with the larger median. Over a sweep of single- and
  double-threshold decision rules, each rule's false positive and false negative rates give
  :math:`\varepsilon = \max\{\log\frac{1-\delta-\mathrm{FPR}}{\mathrm{FNR}},
  \log\frac{1-\delta-\mathrm{FNR}}{\mathrm{FPR}}\}` (rules with FPR or FNR zero are dropped,
  perfect separation gives infinity); the example's :math:`\varepsilon` is the largest, capped at
  50, and 50 when one sample's range is under 1% of the other's. An example scores
  :math:`2^{-\lfloor \varepsilon / 0.5 \rfloor}` when its half-unit bucket ends at or below
  :math:`\lceil \ln(N-1) \rceil`, and 0 otherwise; the forget quality is the mean score. Definition and constants follow
  google-deepmind/unlearning_evaluation (Triantafillou et al., 2024, "Are we making progress in
  unlearning?").

  Args:
    unlearned_confs: ``[N, n]`` logit-scaled confidences of N unlearned models on n forget examples.
    retrained_confs: ``[N, n]`` the same for N retrained models.
    delta: the :math:`\delta` of the hypothesis test.

  Returns:
    ``(forget quality in [0, 1], epsilon per example [n])``.
  """
  u = np.asarray(unlearned_confs, np.float64)
  r = np.asarray(retrained_confs, np.float64)
  if u.ndim != 2 or u.shape != r.shape:
    raise ValueError(f"confidences must both be [models, examples]; got {u.shape} and {r.shape}.")
  n_models, n_examples = u.shape
  if n_models < 3 or n_examples == 0:
    raise ValueError(f"need at least 3 models and 1 example, got {n_models} models and {n_examples} examples.")
  retrain_pos = np.median(r, axis=0) > np.median(u, axis=0)
  pos = np.where(retrain_pos, r, u)
  neg = np.where(retrain_pos, u, r)
  eps = np.array([_epsilon(pos[:, i], neg[:, i], delta) for i in range(n_examples)])
  max_eps = np.ceil(np.log(n_models - 1))
  # Half-unit buckets [0, 0.5), [0.5, 1), ... worth 1, 1/2, 1/4, ...; those ending past max_eps score 0.
  bucket = np.floor(eps / 0.5)
  points = np.where(bucket * 0.5 + 0.5 <= max_eps, 2.0 ** (-bucket), 0.0)
  return float(np.mean(points)), eps


def neurips_score(
    forget_quality_value: float,
    *,
    retain_acc: float,
    test_acc: float,
    retrain_retain_acc: float,
    retrain_test_acc: float,
) -> float:
  r"""Final challenge score: forget quality times the utility ratios,
  :math:`F \cdot \frac{RA_u}{RA_r} \cdot \frac{TA_u}{TA_r}` (mean accuracies of the N models)."""
  return float(forget_quality_value * (retain_acc / retrain_retain_acc) * (test_acc / retrain_test_acc))
