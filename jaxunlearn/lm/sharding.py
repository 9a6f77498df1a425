"""Placing a language model's parameters (FSDP-style) and batches on a device mesh."""

from jaxunlearn._src.lm_sharding import batch_sharding
from jaxunlearn._src.lm_sharding import fsdp_shardings
from jaxunlearn._src.lm_sharding import shard_params

__all__ = ("batch_sharding", "fsdp_shardings", "shard_params")
