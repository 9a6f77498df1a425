"""Unlearning evaluation metrics: accuracy, divergences, membership inference, NeurIPS 2023 score."""

from jaxunlearn._src.metrics import accuracy
from jaxunlearn._src.metrics import activation_distance
from jaxunlearn._src.metrics import auc
from jaxunlearn._src.metrics import entropy
from jaxunlearn._src.neurips import forget_quality
from jaxunlearn._src.metrics import js_divergence
from jaxunlearn._src.metrics import kl_divergence
from jaxunlearn._src.metrics import logistic_mia
from jaxunlearn._src.neurips import logit_scaled_confidence
from jaxunlearn._src.metrics import loss_threshold_mia
from jaxunlearn._src.neurips import neurips_score
from jaxunlearn._src.metrics import per_example_loss
from jaxunlearn._src.metrics import zrf_score
from jaxunlearn._src.relearn import relearn_steps

__all__ = (
    "accuracy",
    "activation_distance",
    "auc",
    "entropy",
    "forget_quality",
    "js_divergence",
    "kl_divergence",
    "logistic_mia",
    "logit_scaled_confidence",
    "loss_threshold_mia",
    "neurips_score",
    "per_example_loss",
    "relearn_steps",
    "zrf_score",
)
