"""jaxunlearn: machine unlearning for JAX and Flax.

Unlearning transforms compose with optax; statistics run jit-compiled and data-parallel;
``jaxunlearn.data`` and ``jaxunlearn.models`` hold the embedded datasets and reference models.
"""

from jaxunlearn import certified
from jaxunlearn import corrective
from jaxunlearn import data
from jaxunlearn import distributed
from jaxunlearn import knn
from jaxunlearn import lm
from jaxunlearn import losses
from jaxunlearn import methods
from jaxunlearn import metrics
from jaxunlearn import models
from jaxunlearn import recipes
from jaxunlearn import sisa
from jaxunlearn import training
from jaxunlearn._src.ascent import GradientAscentState
from jaxunlearn._src.ascent import GradientDifferenceState
from jaxunlearn._src.ascent import gradient_ascent
from jaxunlearn._src.ascent import gradient_difference
from jaxunlearn._src.fastfisher import decomposed_leaves as fisher_fast_path_leaves
from jaxunlearn._src.importance import fisher_diagonal
from jaxunlearn._src.microbatch import microbatch_value_and_grad
from jaxunlearn._src.base import path_mask
from jaxunlearn._src.noise import GaussianNoiseState
from jaxunlearn._src.noise import add_gaussian_noise
from jaxunlearn._src.noise import gaussian_noise
from jaxunlearn._src.noise import gaussian_sigma
from jaxunlearn._src.reset import LayerResetState
from jaxunlearn._src.reset import layer_reset
from jaxunlearn._src.reset import prune_smallest
from jaxunlearn._src.reset import reset_params
from jaxunlearn._src.ssd import SSDState
from jaxunlearn._src.ssd import SSDWarning
from jaxunlearn._src.ssd import selective_synaptic_dampening
from jaxunlearn._src.ssd import ssd_dampen
from jaxunlearn._src.ssd import ssd_selection
from jaxunlearn._src.adversarial import nearest_adversarial
from jaxunlearn._src.losses import kl_to_teacher
from jaxunlearn._src.relabel import FreezeState
from jaxunlearn._src.relabel import freeze_entries
from jaxunlearn._src.relabel import random_labels
from jaxunlearn._src.relabel import saliency_mask
from jaxunlearn._src.sparse import DecayingL1State
from jaxunlearn._src.sparse import decaying_l1
from jaxunlearn._src.knn import KNNClassifier
from jaxunlearn._src.audit import forget_checkpoint
from jaxunlearn._src.audit import train_checkpoint

__version__ = "0.1.0"

__all__ = (
    "GaussianNoiseState",
    "GradientAscentState",
    "GradientDifferenceState",
    "LayerResetState",
    "SSDState",
    "SSDWarning",
    "add_gaussian_noise",
    "certified",
    "corrective",
    "data",
    "distributed",
    "knn",
    "fisher_diagonal",
    "fisher_fast_path_leaves",
    "gaussian_noise",
    "gaussian_sigma",
    "gradient_ascent",
    "gradient_difference",
    "layer_reset",
    "lm",
    "losses",
    "methods",
    "metrics",
    "microbatch_value_and_grad",
    "models",
    "path_mask",
    "sisa",
    "prune_smallest",
    "recipes",
    "reset_params",
    "selective_synaptic_dampening",
    "ssd_dampen",
    "ssd_selection",
    "nearest_adversarial",
    "kl_to_teacher",
    "FreezeState",
    "freeze_entries",
    "random_labels",
    "saliency_mask",
    "DecayingL1State",
    "decaying_l1",
    "KNNClassifier",
    "forget_checkpoint",
    "train_checkpoint",
    "training",
)
