"""Strict JAX configuration for the test suite, and 8 simulated CPU devices.

The device count must be set before jax is imported anywhere, so it is set here at collection.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("JAXUNLEARN_COMPILE_CACHE", "off")  # hermetic: the CLI would cache compiled programs in ~/.cache

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# Strict dtype promotion is not enabled: optax's own Adam (bias correction `decay ** count`) fails
# under it. Dtype preservation is tested explicitly instead (f32 and bf16 in test_transforms.py).


@pytest.fixture(scope="session")
def digits():
  from jaxunlearn import data

  return data.load("digits")


@pytest.fixture(scope="module")
def job_maker(digits):
  """The small SISA job of the reliability and fault-injection tests (tests/sisa_fixtures.py)."""
  from sisa_fixtures import Job

  return Job(digits[0])


@pytest.fixture(scope="module")
def sisa_base(job_maker, tmp_path_factory):
  """A trained directory of that job; tests work on copies of it."""
  d = tmp_path_factory.mktemp("sisa") / "base"
  job_maker.open(d, new=True).train()
  return str(d)
