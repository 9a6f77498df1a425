"""Several processes with JAX's multi-controller runtime (``jax.distributed``): global batches
from each process's rows, and the local launcher behind ``jaxunlearn launch``."""

from jaxunlearn._src.distributed import global_batch
from jaxunlearn._src.distributed import initialize_from_env
from jaxunlearn._src.distributed import launch
from jaxunlearn._src.distributed import local_rows
from jaxunlearn._src.distributed import to_host

__all__ = ("global_batch", "initialize_from_env", "launch", "local_rows", "to_host")
