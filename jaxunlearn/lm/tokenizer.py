"""The byte-level tokenizer: UTF-8 bytes plus BOS, EOS and PAD."""

from jaxunlearn._src.lm_tokenizer import BOS
from jaxunlearn._src.lm_tokenizer import EOS
from jaxunlearn._src.lm_tokenizer import PAD
from jaxunlearn._src.lm_tokenizer import VOCAB_SIZE
from jaxunlearn._src.lm_tokenizer import decode
from jaxunlearn._src.lm_tokenizer import encode
from jaxunlearn._src.lm_tokenizer import encode_batch

__all__ = ("BOS", "EOS", "PAD", "VOCAB_SIZE", "decode", "encode", "encode_batch")
