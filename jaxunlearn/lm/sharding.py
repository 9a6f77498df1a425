"""Placing a language model's parameters (FSDP-style) and batches on a device mesh; saving and
restoring sharded parameters across meshes and process counts."""

from jaxunlearn._src.lm_sharding import batch_sharding
from jaxunlearn._src.lm_sharding import fsdp_shardings
from jaxunlearn._src.lm_sharding import restore_params
from jaxunlearn._src.lm_sharding import save_params
from jaxunlearn._src.lm_sharding import shard_params

__all__ = ("batch_sharding", "fsdp_shardings", "restore_params", "save_params", "shard_params")
