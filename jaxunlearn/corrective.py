"""Corrective unlearning: find poisoned or mislabelled training examples with Local Outlier Factor
or Isolation Forest, class by class (``detect``), then unlearn the flagged ids with any method of
``jaxunlearn.methods`` or with SISA. ``jaxunlearn demo --corrupt backdoor:0.05`` runs the job."""

from jaxunlearn._src.corrective import METHODS
from jaxunlearn._src.corrective import Detection
from jaxunlearn._src.corrective import detect
from jaxunlearn._src.corrective_demo import penultimate

__all__ = ("METHODS", "Detection", "detect", "penultimate")
