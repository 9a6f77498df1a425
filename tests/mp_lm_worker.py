"""One process of the multi-process LM checkpoint test (run by tests/test_distributed.py through
``jaxunlearn.distributed.launch``): saves FSDP-sharded parameters from several processes, and
restores a checkpoint written by one process onto meshes over several; each process writes what
it checked to ``OUT/process_K.json``."""

import json
import os
import sys


def main(saved_alone: str, save_to: str, out: str) -> None:
  from jaxunlearn._src import distributed

  distributed.initialize_from_env()  # before any JAX computation
  import jax
  import numpy as np

  import mp_common
  from jaxunlearn.lm import sharding

  full = mp_common.lm_params()
  auto = jax.sharding.AxisType.Auto
  mesh8 = jax.make_mesh((8,), ("fsdp",), axis_types=(auto,))
  sharding.save_params(save_to, sharding.shard_params(full, mesh8))
  got = {"process": jax.process_index(), "processes": jax.process_count()}
  flat = dict(jax.tree_util.tree_flatten_with_path(full)[0])
  for name, mesh in (("fsdp8", mesh8), ("data2_fsdp4", jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(auto, auto)))):
    back = sharding.restore_params(saved_alone, mesh, template=full)
    checked, split, equal = 0, 0, True
    for path, arr in jax.tree_util.tree_flatten_with_path(back)[0]:
      want = np.asarray(flat[path])
      split += int(not arr.is_fully_addressable and not arr.is_fully_replicated)
      for piece in arr.addressable_shards:
        equal &= bool(np.array_equal(np.asarray(piece.data), want[piece.index]))
        checked += 1
    got[name] = {"equal": equal, "pieces": checked, "split_over_processes": split}
  with open(os.path.join(out, f"process_{jax.process_index()}.json"), "w") as f:
    json.dump(got, f)


if __name__ == "__main__":
  main(*sys.argv[1:])
