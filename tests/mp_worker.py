"""One process of the multi-process tests (run by tests/test_distributed.py through
``jaxunlearn.distributed.launch``: ``core`` once per default test run, ``heavy`` once per slow
run; each start costs seconds, so one launch serves several tests). What each writes under OUT:

(``core``:)
* ``steps.npz``: data-parallel Fisher, training step, gradient-difference step and ``fit`` on
  global arrays over every process's devices (process 0);
* ``sisa_K.json``: SISA trained, forgotten, verified and repaired (its manifest deleted) here, a
  directory trained in one process forgotten here, a bad request (process K);
(``heavy``:)
* ``lm_K.json``, ``lm_recipe.npz``, ``lm_two/``: a checkpoint written by one process restored on
  two meshes over both, sharded parameters saved from both, an LM recipe with parameters split
  over both;
* ``score.json``: ``jaxunlearn score`` (written by process 0).
"""

import json
import os
import sys


def main(part: str, out: str, *args: str) -> None:
  from jaxunlearn._src import distributed

  distributed.initialize_from_env()  # before any JAX computation
  if part == "core":
    _core(out, *args)
  else:
    _heavy(out, *args)


def _core(out: str, sisa_alone: str, forget_ids: str) -> None:
  import jax
  import numpy as np

  import mp_common
  from jaxunlearn._src import distributed

  me = jax.process_index()
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  x, y, mask = mp_common.data()
  rows = distributed.local_rows(len(x))
  steps = mp_common.compute(distributed.global_batch({"x": x[rows], "y": y[rows], "mask": mask[rows]}, mesh))
  steps.update(mp_common.fitted(mesh))
  if me == 0:
    np.savez(os.path.join(out, "steps.npz"), **steps, processes=jax.process_count(), devices=jax.device_count())
  _write(out, f"sisa_{me}.json", _sisa(out, sisa_alone, [int(i) for i in forget_ids.split(",")]))


def _heavy(out: str, lm_alone: str, score_args: str) -> None:
  import jax

  from jaxunlearn import cli

  _write(out, f"lm_{jax.process_index()}.json", _lm(out, lm_alone))
  cli.main(["score", *score_args.split(), "--json", os.path.join(out, "score.json")])


def _write(out, name, obj):
  with open(os.path.join(out, name), "w") as f:
    json.dump(obj, f)


def _sisa(out, sisa_alone, forget):
  import fcntl

  import jax

  from jaxunlearn import sisa
  from jaxunlearn._src import distributed

  import sisa_fixtures
  from jaxunlearn import data

  train, _ = data.load("digits")
  job = sisa_fixtures.Job(train)
  got = {"process": jax.process_index(), "processes": jax.process_count()}
  s = job.open(os.path.join(out, "sisa_two"), new=True, strategy="sequential")
  got["train"] = s.train().digests
  result = s.forget(forget)
  got["forget"] = {"digests": s.digests(), "retrained": result.retrained, "steps": result.steps, "seq": result.seq}
  try:  # a bad request is refused by every process alike (none is left waiting for the others)
    s.forget([10**9])
  except ValueError as err:
    got["unknown"] = str(err)
  got["verify"] = s.verify().ok  # every affected shard retrained (owners in parallel) and compared
  # An error of process 0's alone (the writer lock held elsewhere) is raised by every process.
  if jax.process_index() == 0:
    holder = open(os.path.join(out, "sisa_two", ".lock"), "a+")
    fcntl.flock(holder, fcntl.LOCK_EX)
  distributed.barrier("lock-held")
  try:
    s.forget(forget, wait=0)
  except sisa.LockTimeout as err:
    got["locked"] = f"{type(err).__name__}: {err}"
  if jax.process_index() == 0:
    holder.close()
  if jax.process_index() == 0:  # a lost manifest, rebuilt by the two processes from the checkpoints
    os.remove(os.path.join(out, "sisa_two", "manifest.json"))
  distributed.barrier("manifest-removed")
  repaired = s.repair()
  got["repair"] = {"digests": repaired.digests, "reused": repaired.reused, "retrained": repaired.retrained}
  other = job.open(sisa_alone)  # trained in one process, forgotten in two
  other.forget(forget)
  got["forget_elsewhere"] = other.digests()
  return got


def _lm(out, lm_alone):
  import jax
  import numpy as np

  import mp_common
  from jaxunlearn.lm import sharding

  full = mp_common.lm_params()
  auto = jax.sharding.AxisType.Auto
  mesh8 = jax.make_mesh((8,), ("fsdp",), axis_types=(auto,))
  sharding.save_params(os.path.join(out, "lm_two"), sharding.shard_params(full, mesh8))
  got = {}
  flat = dict(jax.tree_util.tree_flatten_with_path(full)[0])
  for name, mesh in (("fsdp8", mesh8), ("data2_fsdp4", jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(auto, auto)))):
    back = sharding.restore_params(lm_alone, mesh, template=full)
    checked, split, equal = 0, 0, True
    for path, arr in jax.tree_util.tree_flatten_with_path(back)[0]:
      want = np.asarray(flat[path])
      split += int(not arr.is_fully_addressable and not arr.is_fully_replicated)
      for piece in arr.addressable_shards:
        equal &= bool(np.array_equal(np.asarray(piece.data), want[piece.index]))
        checked += 1
    got[name] = {"equal": equal, "pieces": checked, "split_over_processes": split}
  trained = mp_common.lm_recipe(jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(auto, auto)))
  if jax.process_index() == 0:
    np.savez(os.path.join(out, "lm_recipe.npz"), **trained)
  return got


if __name__ == "__main__":
  main(*sys.argv[1:])
