"""The language-model metrics against SciPy, scikit-learn and explicit definitions."""

import numpy as np
import pytest
from scipy import stats

from jaxunlearn.lm import metrics


def test_truth_ratio_and_aggregates():
  rng = np.random.default_rng(0)
  correct, perturbed = rng.uniform(0.2, 3, 7), rng.uniform(0.2, 3, (7, 5))
  tr = metrics.truth_ratio(correct, perturbed)
  for i in range(7):
    geo = np.prod(np.exp(-perturbed[i])) ** (1 / 5)  # geometric mean of the perturbed probabilities
    assert tr[i] == pytest.approx(geo / np.exp(-correct[i]), rel=1e-12)
  assert metrics.truth_ratio_forget(tr) == pytest.approx(np.mean([min(r, 1 / r) for r in tr]))
  assert metrics.truth_ratio_utility(tr) == pytest.approx(np.mean([max(0.0, 1 - r) for r in tr]))
  norm = metrics.normalized_probability(correct, perturbed)
  expected = np.exp(-correct) / (np.exp(-correct) + np.exp(-perturbed).sum(1))
  np.testing.assert_allclose(norm, expected, rtol=1e-12)
  with pytest.raises(ValueError, match=r"\[N, K\]"):
    metrics.truth_ratio(correct, perturbed[:3])


def test_forget_quality_is_the_ks_p_value_and_utility_the_harmonic_mean():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=40), rng.normal(0.5, size=30)
  assert metrics.forget_quality(a, b) == pytest.approx(stats.ks_2samp(a, b).pvalue, rel=1e-12)
  v = rng.uniform(0.1, 1, 9)
  assert metrics.model_utility(v) == pytest.approx(stats.hmean(v), rel=1e-12)
  assert metrics.model_utility([0.5, 0.0, 1.0]) == 0.0
  with pytest.raises(ValueError, match="non-negative"):
    metrics.model_utility([0.5, -0.1])


def _lcs(a, b):
  table = np.zeros((len(a) + 1, len(b) + 1), int)
  for i in range(len(a)):
    for j in range(len(b)):
      table[i + 1, j + 1] = table[i, j] + 1 if a[i] == b[j] else max(table[i, j + 1], table[i + 1, j])
  return table[-1, -1]


def test_rouge_l_recall_is_lcs_over_the_reference():
  pairs = [("Ana was born in Lima.", "Ana was born in Oslo."), ("the Zemi river flows", "The river Zemi flows here"),
           ("", "Something here"), ("exactly this", "exactly this")]
  got = metrics.rouge_l_recall([p for p, _ in pairs], [r for _, r in pairs])
  for (pred, ref), g in zip(pairs, got):
    tp, tr = pred.lower().replace(".", "").split(), ref.lower().replace(".", "").split()
    assert g == pytest.approx(_lcs(tp, tr) / len(tr))


def _logits_for(preds, vocab=6):
  """Logits whose argmax at position t is preds[t]."""
  out = np.zeros((1, len(preds), vocab))
  out[0, np.arange(len(preds)), preds] = 5.0
  return out


def test_exact_memorization_and_extraction_strength():
  labels = np.array([[-100, -100, 1, 2, 3, 4, -100]])
  # argmax at t predicts label t+1: positions 1..4 predict labels 2..5 = [1, 2, 3, 4]
  preds = np.array([0, 5, 2, 3, 4, 0, 0])  # wrong, right, right, right
  logits = _logits_for(preds)
  assert metrics.exact_memorization(logits, labels)[0] == pytest.approx(3 / 4)
  assert metrics.extraction_strength(logits, labels)[0] == pytest.approx(1 - 1 / 4)  # from index 1 on, all right
  preds[4] = 0  # the last one wrong: nothing extracted
  assert metrics.extraction_strength(_logits_for(preds), labels)[0] == 0.0
  preds[:5] = [0, 1, 2, 3, 4]  # all right
  assert metrics.extraction_strength(_logits_for(preds), labels)[0] == 1.0


def test_min_k_mia_and_privleak():
  rng = np.random.default_rng(2)
  lp = -rng.uniform(0, 5, (3, 11))
  mask = np.ones((3, 11), bool)
  mask[1, 6:] = False
  got = metrics.min_k_scores(lp, mask, k=0.4)
  for i in range(3):
    v = np.sort(lp[i][mask[i]])
    assert got[i] == pytest.approx(-np.mean(v[: max(1, int(len(v) * 0.4))]))
  from sklearn.metrics import roc_auc_score

  forget, holdout = rng.normal(0, 1, 20), rng.normal(1, 1, 25)
  auc = metrics.mia_auc(forget, holdout)
  assert auc == pytest.approx(roc_auc_score(np.r_[np.zeros(20), np.ones(25)], np.r_[forget, holdout]))
  assert metrics.privleak(0.7, 0.6) == pytest.approx(((1 - 0.7) - (1 - 0.6)) / (1 - 0.6) * 100)
  with pytest.raises(ValueError, match="undefined"):
    metrics.privleak(0.5, 1.0)


def test_extraction_likelihood_by_hand():
  target = list(range(8))
  n = 3
  # The model reproduces the suffix perfectly from every prefix: EL = 1.
  perfect = [target[i:] for i in range(1, len(target))]
  assert metrics.extraction_likelihood([perfect], [target], n=n)[0] == pytest.approx(1.0)
  # Only the continuation from prefix length 1 is right; others garbage.
  partial = [target[1:]] + [[99] * (len(target) - i) for i in range(2, len(target))]
  # i = 1 contributes 1; i = 2..5 contribute 0; T - n = 5
  assert metrics.extraction_likelihood([partial], [target], n=n)[0] == pytest.approx(1 / 5)
  with pytest.raises(ValueError, match="gram"):
    metrics.extraction_likelihood([[[]]], [[1, 2]], n=3)
