"""SISA's training engine: runs shards stage by stage from a start stage, reusing intact
checkpoints of the same content, and checks a directory against retraining (``verify``).

``StageEngine`` is a base class of ``sisa.SISA``; it reads the attributes ``SISA`` sets
(``config``, ``data``, ``init_fn``, ``loss_fn``, ``optimizer``, ``store``, ``strategy``,
``_fingerprint``, ``_plan()``) and the upkeep methods of ``sisa_upkeep.Upkeep``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import jax
import numpy as np

from jaxunlearn._src import distributed, lanes
from jaxunlearn._src import sisa_plan as plan_lib
from jaxunlearn._src import sisa_store as store_lib
from jaxunlearn._src.sisa_files import CheckpointError
from jaxunlearn._src.sisa_plan import digest
from jaxunlearn._src.sisa_results import VerifyResult

Progress = Callable[[str, int, int], None]


class StageEngine:
  """Stage-by-stage training of SISA shards (mixed into ``SISA``)."""

  _table = None
  _template = None

  def _state_template(self):
    if self._template is None:
      p = self.init_fn(jax.random.key(0))
      self._template = {"params": p, "opt_state": self.optimizer.init(p)}
    return self._template

  def _stage_key(self, shard: int, stage: int, ids: np.ndarray) -> str:
    return plan_lib.stage_key(self._fingerprint, shard, stage, ids)

  def _restore_state(self, shard: int, name: str, expected: str | None):
    return self.store.restore(shard, name, expected, self._state_template())

  def _reusable_state(self, shard: int, name: str):
    return self.store.reusable(shard, name, self._state_template())

  def _stage_rows(self, shard: int, stage: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = self.config
    positions = self.data.positions(ids)
    seed = plan_lib.stage_seed(c.seed, shard, stage)
    parts = [lanes.epoch_rows(positions, ids, batch_size=c.batch_size, seed=seed, epoch=e) for e in range(c.stage_epochs)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

  def _run(self, starts: dict[int, int], forgotten: set[int], prior: dict, progress: Progress | None, save: bool,
           report: bool = False):
    """Trains the shards in ``starts`` from their start stage to the end, reusing any intact
    checkpoint of the same content; returns ``(stages {shard: [(name, digest)] for the stages
    run}, steps, final params {shard: tree})``, plus ``{shard: first stage trained}`` if ``report``.

    In several processes (every one making this call), shard ``k`` is trained by process
    ``k % processes`` on its own first device; after each stage the states are exchanged, process
    0 writes the checkpoints, and every process returns the same result."""
    c = self.config
    plan_ = self._plan()
    template = self._state_template()
    procs, me = jax.process_count(), jax.process_index()
    if procs > 1 and self.strategy != "sequential":
      raise ValueError(f"{self.directory} uses the {self.strategy!r} strategy, which runs every shard in one program "
                       f"in one process; across {procs} processes SISA trains with strategy='sequential' (choose it at "
                       "training; a directory trained with vmap is forgotten in one process).")
    mine = lambda k: k % procs == me  # noqa: E731
    states = {}
    for shard, start in starts.items():
      if not mine(shard):
        continue
      if start == 0:
        p = self.init_fn(jax.random.fold_in(jax.random.key(c.seed), shard))
        states[shard] = {"params": p, "opt_state": self.optimizer.init(p)}
      else:
        name, dig = prior[shard][start - 1]
        states[shard] = self._restore_state(shard, name, dig)
    if self._table is None:
      self._table = lanes.table(self.data)
    stages: dict[int, list] = {k: [] for k in starts}
    trained: dict[int, int] = {}
    steps = 0
    total = sum(c.slices - s for s in starts.values())
    done = 0
    for stage in range(min(starts.values(), default=c.slices), c.slices):
      active = [k for k in starts if starts[k] <= stage]
      stage_ids = {k: plan_lib.stage_ids(plan_, k, stage, forgotten) for k in active}
      keys = {k: self._stage_key(k, stage, stage_ids[k]) for k in active}
      todo, reused = [], {}
      for k in active:
        if not mine(k):
          continue
        found = self._reusable_state(k, keys[k]) if save else None
        if found is not None:
          states[k], reused[k] = found
        else:
          todo.append(k)
      stage_steps = self._train_stage(todo, stage, {k: stage_ids[k] for k in todo}, states, template) if todo else 0
      if procs > 1:
        stage_steps, reused = self._exchange(states, [k for k in active if mine(k)], stage_steps, reused,
                                             jax.tree.structure(template))
      steps += stage_steps
      for k in active:
        if k in reused:
          stages[k].append((keys[k], reused[k]))
          continue
        trained.setdefault(k, stage)
        written = save and me == 0
        stages[k].append((keys[k], self.store.save(k, keys[k], states[k]) if written else digest(states[k])))
        if written:
          store_lib.fault("run:saved")
      done += len(active)
      if progress is not None:
        progress(f"stage {stage + 1}/{c.slices}", done, total)
    final = {k: states[k]["params"] for k in starts}
    return (stages, steps, final, trained) if report else (stages, steps, final)

  @staticmethod
  def _exchange(states: dict, own: list[int], steps: int, reused: dict[int, str], treedef) -> tuple[int, dict[int, str]]:
    """Every process's states of its shards ``own`` (this stage's) to every process, bit for bit;
    returns the steps of all processes and the digests of every reused (not retrained) state."""
    meta = json.dumps({"steps": steps, "reused": {str(k): d for k, d in reused.items()}, "own": own}).encode()
    arrays = {"meta": np.frombuffer(meta, np.uint8)}
    for k in own:
      for i, leaf in enumerate(jax.tree.leaves(states[k])):
        arrays[f"{k}/{i}"] = np.asarray(leaf)
    total, every_reused = 0, {}
    for got in distributed.allgather_arrays(arrays):
      info = json.loads(got["meta"].tobytes())
      total += info["steps"]
      every_reused.update({int(k): d for k, d in info["reused"].items()})
      for k in info["own"]:
        states[k] = treedef.unflatten([got[f"{k}/{i}"] for i in range(treedef.num_leaves)])
    return total, every_reused

  def _train_stage(self, shards: list[int], stage: int, stage_ids: dict, states: dict, template) -> int:
    c = self.config
    rows = {k: self._stage_rows(k, stage, stage_ids[k]) for k in shards}
    if self.strategy == "vmap":
      # All S lanes, always: a shard's result must come from the same program whatever else runs.
      lane_states = [states.get(k, template) for k in range(c.shards)]
      per_lane = [rows.get(k, (np.zeros((0, c.batch_size), np.int32), np.zeros((0, c.batch_size), np.float32)))
                  for k in range(c.shards)]
      schedule = lanes.stack_lanes(per_lane, c.batch_size)
      stacked = lanes.stack(lane_states)
      p, s = lanes.run(self.loss_fn, self.optimizer, stacked["params"], stacked["opt_state"], self._table,
                       schedule, strategy="vmap")
      for k in shards:
        states[k] = jax.device_get({"params": lanes.unstack(p, k), "opt_state": lanes.unstack(s, k)})
      return int(schedule.active.sum())
    steps = 0
    for k in shards:
      schedule = lanes.stack_lanes([rows[k]], c.batch_size)
      stacked = lanes.stack([states[k]])
      p, s = lanes.run(self.loss_fn, self.optimizer, stacked["params"], stacked["opt_state"], self._table,
                       schedule, strategy="sequential")
      states[k] = jax.device_get({"params": lanes.unstack(p, 0), "opt_state": lanes.unstack(s, 0)})
      steps += int(schedule.active.sum())
    return steps

  def verify(self, *, progress: Progress | None = None) -> VerifyResult:
    """Checks the directory against the disk and against retraining.

    1. Every live checkpoint (every shard, every stage) is restored: each file's sha256 and the
       state digest must match the records and the manifest; final parameters must be finite.
    2. Every shard that lost ids is retrained from scratch (a scratch run, nothing written) and
       its digest compared with the checkpoint's.

    Returns a :class:`VerifyResult` (shards {k: bool}, ok, problems).
    """
    self._check_platform("verify")
    problems: list[str] = []
    on_disk: dict[int, str] = {}
    with self._reading() as manifest:
      for k in range(self.config.shards):
        for stage, (name, dig) in enumerate(manifest["stages"][str(k)]):
          try:
            state = self._restore_state(k, name, dig)
          except CheckpointError as err:
            problems.append(f"shard {k} stage {stage}: {err}")
            continue
          if stage == len(manifest["stages"][str(k)]) - 1:
            on_disk[k] = digest(state["params"])
            if on_disk[k] != manifest["final"][str(k)]:
              problems.append(f"shard {k}: the final checkpoint's parameters differ from the manifest's digest.")
            if not all(np.all(np.isfinite(np.asarray(x, np.float32))) for x in jax.tree.leaves(state["params"])):
              problems.append(f"shard {k}: the model has non-finite parameters (NaN or inf): training diverged.")
      ids, shard, _ = self._plan()
      forgotten = set(manifest["forgotten"])
      live = set(self._live_shards(manifest))
    affected = sorted({int(s) for i, s in zip(ids, shard) if int(i) in forgotten}) or list(range(self.config.shards))
    _, _, final = self._run({k: 0 for k in affected}, forgotten, {}, progress, save=False)
    result = {}
    for k in affected:
      fresh = digest(final[k])
      result[str(k)] = fresh == manifest["final"][str(k)] and on_disk.get(k) == fresh
      if not result[str(k)] and k in on_disk:
        problems.append(f"shard {k}: retraining from scratch gives different parameters"
                        + ("" if k in live else " (a shard with no examples left)"))
    ok = all(result.values()) and not problems
    return VerifyResult(result, ok, problems)
