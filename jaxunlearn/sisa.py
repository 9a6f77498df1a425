"""Exact unlearning with SISA: sharded, isolated, sliced, aggregated training on orbax checkpoints."""

from jaxunlearn._src.sisa import SISA
from jaxunlearn._src.sisa import CheckpointError
from jaxunlearn._src.sisa import LockTimeout
from jaxunlearn._src.sisa import SisaConfig
from jaxunlearn._src.sisa import SisaWarning
from jaxunlearn._src.sisa import aggregate
from jaxunlearn._src.sisa import digest
from jaxunlearn._src.sisa import plan
from jaxunlearn._src.sisa import read_config

__all__ = ("SISA", "CheckpointError", "LockTimeout", "SisaConfig", "SisaWarning", "aggregate", "digest", "plan",
           "read_config")
