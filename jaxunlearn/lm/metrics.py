"""TOFU's, MUSE's and Jang et al.'s unlearning metrics for language models."""

from jaxunlearn._src.lm_metrics import exact_memorization
from jaxunlearn._src.lm_metrics import extraction_likelihood
from jaxunlearn._src.lm_metrics import extraction_strength
from jaxunlearn._src.lm_validation import extraction_likelihood as extraction_likelihood_batch
from jaxunlearn._src.lm_validation import memorization as memorization_accuracy_batch
from jaxunlearn._src.lm_metrics import forget_quality
from jaxunlearn._src.lm_metrics import memorization_accuracy
from jaxunlearn._src.lm_metrics import mia_auc
from jaxunlearn._src.lm_metrics import min_k_scores
from jaxunlearn._src.lm_metrics import model_utility
from jaxunlearn._src.lm_metrics import normalized_probability
from jaxunlearn._src.lm_metrics import privleak
from jaxunlearn._src.lm_metrics import probability
from jaxunlearn._src.lm_metrics import rouge_l_recall
from jaxunlearn._src.lm_metrics import truth_ratio
from jaxunlearn._src.lm_metrics import truth_ratio_forget
from jaxunlearn._src.lm_metrics import truth_ratio_utility

__all__ = ("exact_memorization", "extraction_likelihood", "extraction_likelihood_batch", "extraction_strength", "forget_quality", "memorization_accuracy", "memorization_accuracy_batch", "mia_auc", "min_k_scores", "model_utility", "normalized_probability", "privleak", "probability", "rouge_l_recall", "truth_ratio", "truth_ratio_forget", "truth_ratio_utility")
