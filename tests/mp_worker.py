"""One process of the multi-process test (run by tests/test_distributed.py through
``jaxunlearn.distributed.launch``): data-parallel Fisher, training step and gradient-difference
step on global arrays over every process's devices; process 0 writes the results."""

import sys


def main(path: str) -> None:
  from jaxunlearn._src import distributed

  distributed.initialize_from_env()  # before any JAX computation
  import jax
  import numpy as np

  import mp_common

  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  x, y, mask = mp_common.data()
  rows = distributed.local_rows(len(x))
  out = mp_common.compute(distributed.global_batch({"x": x[rows], "y": y[rows], "mask": mask[rows]}, mesh))
  out.update(mp_common.fitted(mesh))
  if jax.process_index() == 0:
    np.savez(path, **out, processes=jax.process_count(), devices=jax.device_count())


if __name__ == "__main__":
  main(sys.argv[1])
