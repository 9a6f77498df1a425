"""Certified removal (Guo et al., ICML 2020): an (epsilon, delta)-certified logistic-regression head
trained with objective perturbation, whose removals are Newton steps with a tracked
gradient-residual bound, retraining when the budget would be passed. See ``CertifiedLinear``."""

from jaxunlearn._src.certified import GAMMA
from jaxunlearn._src.certified import CertifiedLinear
from jaxunlearn._src.certified import Removal
from jaxunlearn._src.certified import budget
from jaxunlearn._src.certified import fit
from jaxunlearn._src.certified import forget
from jaxunlearn._src.certified import load
from jaxunlearn._src.certified import prepare_features
from jaxunlearn._src.sisa_files import CheckpointError

__all__ = ("GAMMA", "CertifiedLinear", "CheckpointError", "Removal", "budget", "fit", "forget", "load",
           "prepare_features")
