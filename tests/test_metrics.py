import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy
from sklearn.metrics import roc_auc_score

from jaxunlearn import metrics


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


@pytest.fixture
def logits_pair():
  rng = np.random.default_rng(0)
  return rng.normal(size=(50, 7)) * 2, rng.normal(size=(50, 7)) * 2


def test_divergences_against_scipy(logits_pair):
  a, b = logits_pair
  p, q = _softmax(a), _softmax(b)
  js_ref = np.mean([jensenshannon(pi, qi, base=2) ** 2 for pi, qi in zip(p, q)])
  assert metrics.js_divergence(a, b) == pytest.approx(js_ref, rel=1e-9)
  assert metrics.js_divergence(a, b) == pytest.approx(metrics.js_divergence(b, a), rel=1e-12)
  assert metrics.js_divergence(a, a) == pytest.approx(0.0, abs=1e-12)
  one_hot_far = np.array([[50.0, 0.0], [0.0, 50.0]])
  assert metrics.js_divergence(one_hot_far, one_hot_far[::-1]) == pytest.approx(1.0, abs=1e-9)
  kl_ref = np.mean([scipy_entropy(pi, qi) for pi, qi in zip(p, q)])
  assert metrics.kl_divergence(a, b) == pytest.approx(kl_ref, rel=1e-9)
  assert metrics.activation_distance(a, b) == pytest.approx(np.mean(np.linalg.norm(p - q, axis=1)), rel=1e-9)
  assert metrics.zrf_score(a, b) == pytest.approx(1 - js_ref, rel=1e-9)
  np.testing.assert_allclose(metrics.entropy(a), [scipy_entropy(pi) for pi in p], rtol=1e-9)
  labels = np.arange(50) % 7
  np.testing.assert_allclose(metrics.per_example_loss(a, labels), -np.log(p[np.arange(50), labels]), rtol=1e-9)
  assert metrics.accuracy(a, labels) == pytest.approx(np.mean(a.argmax(1) == labels))


def test_bad_logits_raise():
  with pytest.raises(ValueError, match="NaN"):
    metrics.js_divergence(np.array([[np.nan, 1.0]]), np.array([[0.0, 1.0]]))
  with pytest.raises(ValueError, match="shapes differ"):
    metrics.kl_divergence(np.zeros((2, 3)), np.zeros((2, 4)))
  with pytest.raises(ValueError, match=r"\[n, classes\]"):
    metrics.entropy(np.zeros(3))


def test_auc_matches_sklearn_with_ties():
  rng = np.random.default_rng(1)
  pos = np.round(rng.normal(0.5, 1, 80), 1)
  neg = np.round(rng.normal(0, 1, 60), 1)
  ref = roc_auc_score(np.r_[np.ones(80), np.zeros(60)], np.r_[pos, neg])
  assert metrics.auc(pos, neg) == pytest.approx(ref, rel=1e-12)


def test_loss_threshold_mia_extremes():
  rng = np.random.default_rng(2)
  separated = metrics.loss_threshold_mia(rng.uniform(0, 1, 100), rng.uniform(2, 3, 100))
  assert separated == {"auc": 1.0, "accuracy": 1.0}
  same = metrics.loss_threshold_mia(rng.exponential(size=4000), rng.exponential(size=4000))
  assert abs(same["auc"] - 0.5) < 0.03 and same["accuracy"] < 0.55


def test_logistic_mia_learns_and_applies():
  rng = np.random.default_rng(3)
  retain = rng.normal(0, 1, 500)
  test = rng.normal(3, 1, 300)
  out = metrics.logistic_mia(retain, test, rng.normal(0, 1, 200), seed=0)
  assert out["cv_auc"] > 0.95 and out["forget_member_rate"] > 0.9
  out = metrics.logistic_mia(retain, test, rng.normal(3, 1, 200), seed=0)
  assert out["forget_member_rate"] < 0.1
  with pytest.raises(ValueError, match="at least 5"):
    metrics.logistic_mia(retain[:3], test, retain, seed=0)


def test_logit_scaled_confidence_closed_form(logits_pair):
  a, _ = logits_pair
  labels = np.arange(50) % 7
  p = _softmax(a)[np.arange(50), labels]
  np.testing.assert_allclose(metrics.logit_scaled_confidence(a, labels), np.log(p / (1 - p)), rtol=1e-9)
  # Stable where p is within float64 rounding of 1.
  huge = np.array([[800.0, 0.0, 0.0]])
  assert metrics.logit_scaled_confidence(huge, np.array([0]))[0] == pytest.approx(800 - np.log(2), rel=1e-12)


def test_forget_quality_same_vs_different_distributions():
  rng = np.random.default_rng(4)
  n_models, n_examples = 64, 20
  retrained = rng.normal(0, 1, (n_models, n_examples))
  same = rng.normal(0, 1, (n_models, n_examples))
  quality_same, eps_same = metrics.forget_quality(same, retrained)
  far = rng.normal(8, 1, (n_models, n_examples))
  quality_far, eps_far = metrics.forget_quality(far, retrained)
  # Finite samples and the max over thousands of rules put epsilon near 1.5 even for identical
  # distributions (measured: median 1.4 at N=64, 1.6 at N=256), so "same" scores well above 0.
  assert quality_same > 0.1 and np.median(eps_same) < 2.5
  assert quality_far == 0.0 and np.all(eps_far >= 5)  # ceil(ln 63) = 5: every bucket scores 0
  point_mass = np.zeros((n_models, n_examples))
  _, eps_point = metrics.forget_quality(point_mass, retrained)
  assert np.all(eps_point == metrics.forget_quality.__globals__["EPSILON_CAP"])
  with pytest.raises(ValueError, match="at least 3 models"):
    metrics.forget_quality(same[:2], retrained[:2])


def test_forget_quality_single_example_by_hand():
  # Unlearned confidences all below every retrained one: a single threshold separates them
  # perfectly, so epsilon is infinite (capped at 50) and the example scores 0.
  unlearned = np.linspace(-3, -2, 10)[:, None]
  retrained = np.linspace(2, 3, 10)[:, None]
  quality, eps = metrics.forget_quality(unlearned, retrained)
  assert quality == 0.0 and eps[0] == 50.0
  assert metrics.neurips_score(0.5, retain_acc=0.9, test_acc=0.8, retrain_retain_acc=1.0, retrain_test_acc=0.8) == pytest.approx(0.45)
