"""Language-model unlearning losses on logits and Hugging Face-style labels (see the functions)."""

from jaxunlearn._src.lm_losses import IGNORE
from jaxunlearn._src.lm_losses import dpo
from jaxunlearn._src.lm_losses import kl_loss
from jaxunlearn._src.lm_losses import kl_to_reference
from jaxunlearn._src.lm_losses import nll
from jaxunlearn._src.lm_losses import nll_loss
from jaxunlearn._src.lm_losses import npo
from jaxunlearn._src.lm_losses import rmu_activation_loss
from jaxunlearn._src.lm_losses import sequence_nll
from jaxunlearn._src.lm_losses import simnpo
from jaxunlearn._src.lm_losses import token_counts
from jaxunlearn._src.lm_losses import token_logprobs
from jaxunlearn._src.lm_losses import undial
from jaxunlearn._src.lm_losses import with_reference_logits

__all__ = ("IGNORE", "dpo", "kl_loss", "kl_to_reference", "nll", "nll_loss", "npo", "rmu_activation_loss", "sequence_nll", "simnpo", "token_counts", "token_logprobs", "undial", "with_reference_logits")
