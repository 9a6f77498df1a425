"""Shared pieces of the SISA reliability and fault-injection tests: a tiny job, a trained base
directory copied per test, reference directories trained with ``exclude_ids``, and the invariants
every recovered directory must satisfy."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import optax

from jaxunlearn import losses, models, sisa
from jaxunlearn._src import sisa_plan

OPT = optax.adam(1e-3)
CONFIG = dict(shards=3, slices=2, epochs=2, batch_size=16)


class Job:
  """Builds SISA objects on directories for one small digits job (160 examples, 3 shards x 2 slices)."""

  def __init__(self, train):
    self.data = train.take(train.ids[:160])
    self.apply, _ = models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
    self.init = models.init_fn("mlp", train.input_shape, 10)
    self.loss = losses.cross_entropy_loss(self.apply)
    self._refs: dict[frozenset, list[str]] = {}
    self.shard_of, self.slice_of = sisa.plan(self.data.ids, seed=0, shards=CONFIG["shards"], slices=CONFIG["slices"])

  def open(self, directory, *, new: bool = False, optimizer=OPT, **config) -> sisa.SISA:
    cfg = sisa.SisaConfig(**{**CONFIG, **config}) if new else None
    return sisa.SISA(str(directory), self.data, init_fn=self.init, apply_fn=self.apply, loss_fn=self.loss,
                     optimizer=optimizer, config=cfg)

  def ids_in(self, shard: int, slice_: int, n: int = 1) -> list[int]:
    return [int(i) for i in self.data.ids[(self.shard_of == shard) & (self.slice_of == slice_)][:n]]

  def reference(self, tmp_root, forgotten) -> list[str]:
    """Digests of a directory trained from scratch without ``forgotten``."""
    key = frozenset(int(i) for i in forgotten)
    if key not in self._refs:
      d = os.path.join(str(tmp_root), f"ref_{len(self._refs)}")
      job = self.open(d, new=True)
      job.train(exclude_ids=sorted(key) or None)
      self._refs[key] = job.digests()
      shutil.rmtree(d)
    return self._refs[key]


def read(path, binary: bool = False):
  with open(path, "rb" if binary else "r") as f:
    return f.read()


def write(path, content) -> None:
  with open(path, "wb" if isinstance(content, bytes) else "w") as f:
    f.write(content)


def copy_of(base, directory) -> str:
  shutil.copytree(base, directory)
  return str(directory)


def check_invariants(job_maker: Job, directory, forgotten, tmp_root) -> None:
  """What must hold after any fault once the next command has run:

  * every live checkpoint is the one trained on exactly the retained ids (its content key), so no
    forgotten id influences a live model;
  * no checkpoint that the manifest does not reference is left on disk (it may have seen a
    forgotten id);
  * the ledger holds every committed request, and every forgotten id of a request;
  * the models read from disk equal those of a directory trained without the forgotten ids.
  """
  job = job_maker.open(directory)
  manifest = json.loads(read(os.path.join(directory, "manifest.json")))
  assert set(manifest["forgotten"]) == set(forgotten), (sorted(manifest["forgotten"]), sorted(forgotten))
  plan_ = job._plan()
  for k in range(job.config.shards):
    want = [job._stage_key(k, r, sisa_plan.stage_ids(plan_, k, r, set(forgotten))) for r in range(job.config.slices)]
    assert [name for name, _ in manifest["stages"][str(k)]] == want, f"shard {k} holds a stale checkpoint"
  assert job.store.unreferenced(manifest) == [], "checkpoints that may hold forgotten ids were left on disk"
  ledger = [json.loads(x) for x in read(os.path.join(directory, "ledger.jsonl")).splitlines() if x.strip()] \
      if os.path.exists(os.path.join(directory, "ledger.jsonl")) else []
  logged = {json.dumps(r, sort_keys=True) for r in ledger}
  assert all(json.dumps(r, sort_keys=True) in logged for r in manifest["requests"]), "ledger incomplete"
  excluded = set(manifest["excluded_at_train"])
  assert {i for r in ledger for i in r["ids"]} | excluded == set(forgotten), "ledger ids differ from forgotten"
  assert job.digests() == job_maker.reference(tmp_root, forgotten)


def ckpt_entries(directory) -> set[str]:
  root = os.path.join(directory, "ckpt")
  return {os.path.join(s, e) for s in os.listdir(root) if os.path.isdir(os.path.join(root, s))
          for e in os.listdir(os.path.join(root, s))}


def array_files(directory, shard: int, name: str) -> list[str]:
  out = []
  for root, _, files in os.walk(os.path.join(directory, "ckpt", f"shard_{shard:03d}", name)):
    out += [os.path.join(root, f) for f in files]
  return sorted(out)


def flip_bytes(path: str) -> None:
  raw = bytearray(read(path, binary=True))
  for i in range(len(raw) // 2, min(len(raw), len(raw) // 2 + 16)):
    raw[i] ^= 0xFF
  write(path, bytes(raw))


def stage_name(directory, shard: int, stage: int) -> str:
  manifest = json.loads(read(os.path.join(directory, "manifest.json")))
  return manifest["stages"][str(shard)][stage][0]


def finite(tree) -> bool:
  return all(np.all(np.isfinite(np.asarray(x, np.float32))) for x in jax.tree.leaves(tree))
