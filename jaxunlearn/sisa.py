"""Exact unlearning with SISA: sharded, isolated, sliced, aggregated training on orbax checkpoints."""

from jaxunlearn._src.sisa import SISA
from jaxunlearn._src.sisa import CheckpointError
from jaxunlearn._src.sisa import SisaConfig
from jaxunlearn._src.sisa import aggregate
from jaxunlearn._src.sisa import digest
from jaxunlearn._src.sisa import plan

__all__ = ("SISA", "CheckpointError", "SisaConfig", "aggregate", "digest", "plan")
