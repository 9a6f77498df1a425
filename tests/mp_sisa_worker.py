"""One process of the multi-process SISA test (run by tests/test_distributed.py through
``jaxunlearn.distributed.launch``): trains and forgets in several processes; each process writes
what its calls returned to ``OUT/process_K.json``."""

import json
import os
import sys


def main(out: str, trained_alone: str, fresh: str, ids: str) -> None:
  from jaxunlearn._src import distributed

  distributed.initialize_from_env()  # before any JAX computation
  import jax

  import sisa_fixtures
  from jaxunlearn import data

  forget = [int(i) for i in ids.split(",")]
  train, _ = data.load("digits")
  job = sisa_fixtures.Job(train)
  got = {"process": jax.process_index(), "processes": jax.process_count()}
  # A directory trained here, in several processes, then a request forgotten here.
  s = job.open(fresh, new=True, strategy="sequential")
  got["train"] = s.train().digests
  result = s.forget(forget)
  got["forget"] = {"digests": s.digests(), "retrained": result.retrained, "steps": result.steps, "seq": result.seq}
  # A bad request is refused by every process alike (none is left waiting for the others).
  try:
    s.forget([10**9])
  except ValueError as err:
    got["unknown"] = str(err)
  # A directory trained in one process, forgotten in several.
  other = job.open(trained_alone)
  other.forget(forget)
  got["forget_elsewhere"] = other.digests()
  with open(os.path.join(out, f"process_{jax.process_index()}.json"), "w") as f:
    json.dump(got, f)


if __name__ == "__main__":
  main(*sys.argv[1:])
