"""Exact unlearning with SISA: sharded, isolated, sliced, aggregated training on orbax checkpoints."""

from jaxunlearn._src.sisa import SISA
from jaxunlearn._src.sisa_store import CheckpointError
from jaxunlearn._src.sisa_store import LockTimeout
from jaxunlearn._src.sisa_plan import SisaConfig
from jaxunlearn._src.sisa_results import ForgetResult
from jaxunlearn._src.sisa_results import RepairResult
from jaxunlearn._src.sisa_results import TrainResult
from jaxunlearn._src.sisa_results import VerifyResult
from jaxunlearn._src.sisa_store import SisaWarning
from jaxunlearn._src.sisa import aggregate
from jaxunlearn._src.sisa_plan import digest
from jaxunlearn._src.sisa_plan import plan
from jaxunlearn._src.sisa_store import read_config

__all__ = ("SISA", "CheckpointError", "ForgetResult", "LockTimeout", "RepairResult", "SisaConfig", "SisaWarning",
           "TrainResult", "VerifyResult", "aggregate", "digest", "plan", "read_config")
