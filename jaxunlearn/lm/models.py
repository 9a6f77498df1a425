"""The reference decoder (Flax NNX), its functional form and greedy generation with a KV cache."""

from jaxunlearn._src.lm_models import Decoder
from jaxunlearn._src.lm_models import DecoderConfig
from jaxunlearn._src.lm_models import LM
from jaxunlearn._src.lm_models import create
from jaxunlearn._src.lm_models import generate
from jaxunlearn._src.lm_models import generate_uncached

__all__ = ("Decoder", "DecoderConfig", "LM", "create", "generate", "generate_uncached")
