r"""Exact unlearning by SISA training (Bourtoule et al., IEEE S&P 2021): the orchestration.

The training ids are dealt into :math:`S` shards of :math:`R` slices each. Shard :math:`k` trains
one model in :math:`R` stages; stage :math:`r` trains on slices :math:`1..r` of the shard for
``stage_epochs`` epochs, continuing from stage :math:`r-1`, and ends with an orbax checkpoint
(parameters and optimizer state). Forgetting an id retrains only its shard, from the checkpoint
before its slice, and the result is bit-identical to training from scratch without the id.

Everything that shapes training derives from ids and seeds, never array positions: the plan (a
hash rank of the ids), the batch order (``data.id_order`` salted by seed, shard, stage and epoch),
the initialisation (``fold_in(key(seed), shard)``). Checkpoints are content-addressed by the ids
that went into them, so a prefix of stages untouched by a request is reused as is.

The pure plan lives in ``sisa_plan``, the files and their protocols in ``sisa_store``.

Commit protocol of ``forget``: retrain into new content-addressed checkpoints (the old state stays
live), switch the manifest (the commit), append the ledger record, sweep the checkpoints the
manifest no longer references. A crash or an error after the commit leaves "committed; cleanup
pending": the next command of any kind (status, digest, verify, forget, repair, reading the
models) appends the missing ledger records and sweeps, and warns while unreferenced checkpoints
(possibly holding forgotten ids) remain. Entries under ``ckpt/`` that jaxunlearn did not write are
never touched (``status`` lists them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax

from jaxunlearn._src import data as data_lib
from jaxunlearn._src import lanes
from jaxunlearn._src import sisa_plan as plan_lib
from jaxunlearn._src import sisa_store as store_lib
from jaxunlearn._src.base import ApplyFn, LossFn, Params
from jaxunlearn._src.sisa_plan import SisaConfig, digest, plan
from jaxunlearn._src.sisa_results import ForgetResult, RepairResult, TrainResult, VerifyResult
from jaxunlearn._src.sisa_store import CheckpointError, LockTimeout, SisaWarning, read_config

Progress = Callable[[str, int, int], None]

__all__ = ("SISA", "CheckpointError", "ForgetResult", "LockTimeout", "RepairResult", "SisaConfig", "SisaWarning",
           "TrainResult", "VerifyResult", "aggregate", "digest", "plan", "read_config")


class SISA:
  """A SISA ensemble stored in a directory: train, forget ids exactly, predict, verify.

  Args:
    directory: where checkpoints, plan, manifest and ledger live (created by ``train``).
    data: the full training set (``jaxunlearn.data.Dataset``); its ids are what ``forget`` takes.
    init_fn: ``init(key) -> params`` of one model.
    apply_fn: ``apply(params, x) -> logits``.
    loss_fn: ``loss(params, batch) -> scalar`` honouring ``batch["mask"]``.
    optimizer: any optax transformation (the same one on every open of the directory).
    config: hyper-parameters for a new directory; ``None`` reads them from an existing one.
    data_dir: where the data were loaded from (recorded at training so that the command line
      reloads them from the same place; informational for library users).

  Example:
    >>> import tempfile, optax, jax
    >>> from jaxunlearn import data, losses, models, sisa
    >>> train, test = data.load("digits")
    >>> apply, _ = models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
    >>> s = sisa.SISA(tempfile.mkdtemp(), train, init_fn=models.init_fn("mlp", train.input_shape, 10),
    ...               apply_fn=apply, loss_fn=losses.cross_entropy_loss(apply), optimizer=optax.adam(1e-3),
    ...               config=sisa.SisaConfig(shards=2, slices=2, epochs=2))
    >>> summary = s.train()
    >>> record = s.forget([3, 17])  # retrains only the shards holding ids 3 and 17
    >>> len(record["retrained"]) <= 2, s.forget([3])["noop"]
    (True, True)
    >>> labels = sisa.aggregate(s.logits(test.x), "vote")
  """

  def __init__(
      self,
      directory: str,
      data: data_lib.Dataset,
      *,
      init_fn: Callable[[Any], Params],
      apply_fn: ApplyFn,
      loss_fn: LossFn,
      optimizer: optax.GradientTransformation,
      config: SisaConfig | None = None,
      data_dir: str | None = None,
  ):
    self.directory = os.path.abspath(directory)
    self.data = data
    self.init_fn, self.apply_fn, self.loss_fn, self.optimizer = init_fn, apply_fn, loss_fn, optimizer
    stored = self._stored = read_config(self.directory)
    if stored is None and os.path.exists(os.path.join(self.directory, "manifest.json")):
      raise CheckpointError(f"{os.path.join(self.directory, 'config.json')} is missing but the directory holds a trained ensemble: "
                            "restore config.json from a backup (its digest seals the training settings).")
    if config is None:
      if stored is None:
        raise FileNotFoundError(f"{self.directory} is not a SISA directory (no config.json); train one first.")
      config = SisaConfig(**stored["sisa"])
    elif stored is not None and dataclasses.asdict(config) != stored["sisa"]:
      raise ValueError(f"{self.directory} was trained with {stored['sisa']}, not {dataclasses.asdict(config)}.")
    config.validate()
    self.config = config
    self.store = store_lib.Store(self.directory, config.shards)
    if stored is not None and stored["data"] != plan_lib.data_fingerprint(data):
      raise ValueError(f"the data differs from the data {self.directory} was trained on (fingerprint mismatch).")
    self._data_dir = data_dir
    self._table = None
    self._template = None
    self._plan_arrays = None

  @property
  def strategy(self) -> str:
    if self.config.strategy != "auto":
      return self.config.strategy
    if self._stored is not None:
      return self._stored["resolved_strategy"]
    return self.config.resolve_strategy()

  # -- training machinery -------------------------------------------------------------------------
  def _state_template(self):
    if self._template is None:
      p = self.init_fn(jax.random.key(0))
      self._template = {"params": p, "opt_state": self.optimizer.init(p)}
    return self._template

  def _stage_key(self, shard: int, stage: int, ids: np.ndarray) -> str:
    return plan_lib.stage_key(self._fingerprint, shard, stage, ids)

  def _plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Read (and checked against config.json's sha256) once per object: the plan never changes
    # after training, and every operation consults it, some several times.
    if self._plan_arrays is None:
      self._plan_arrays = self.store.read_plan(self._stored["plan"])
    return self._plan_arrays

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
    run}, steps, final params {shard: tree})``, plus ``{shard: first stage trained}`` if ``report``."""
    c = self.config
    plan_ = self._plan()
    template = self._state_template()
    states = {}
    for shard, start in starts.items():
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
      todo = []
      for k in active:
        reused = self._reusable_state(k, keys[k]) if save else None
        if reused is not None:
          states[k] = reused[0]
          stages[k].append((keys[k], reused[1]))
        else:
          todo.append(k)
      if todo:
        steps += self._train_stage(todo, stage, {k: stage_ids[k] for k in todo}, states, template)
        for k in todo:
          trained.setdefault(k, stage)
          stages[k].append((keys[k], self.store.save(k, keys[k], states[k]) if save else digest(states[k])))
          store_lib.fault("run:saved")
      done += len(active)
      if progress is not None:
        progress(f"stage {stage + 1}/{c.slices}", done, total)
    final = {k: states[k]["params"] for k in starts}
    return (stages, steps, final, trained) if report else (stages, steps, final)

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

  # -- ledger, sweep, housekeeping ---------------------------------------------------------------
  def _finish(self, manifest: dict, what: str) -> str | None:
    """Ledger and sweep after a commit; returns ``None``, or the "cleanup pending" message (also
    warned) when they fail: the commit stands, and the next command finishes the job."""
    try:
      self.store.cleanup(manifest)
      return None
    except Exception as err:  # anything: the commit is done and must be reported as such
      message = (f"{what} committed; cleanup pending: {type(err).__name__}: {err}. The next jaxunlearn command on "
                 f"{self.directory} finishes it.")
      warnings.warn(message, SisaWarning, stacklevel=3)
      return message

  def _housekeep(self, manifest: dict, *, locked: bool = False) -> None:
    """Finishes what a crash or an error after a commit left: missing ledger records, unreferenced
    checkpoints. ``locked``: the caller holds the writer and switch locks; otherwise they are taken
    if free (a writer at work finishes its own, and what is unreferenced may be its new
    checkpoints). Warns while checkpoints that may hold forgotten ids remain."""
    logged = {store_lib.canonical(r) for r in self.store.read_ledger()}
    if not (any(store_lib.canonical(r) not in logged for r in manifest["requests"]) or self.store.unreferenced(manifest)):
      return
    if locked:
      self._cleanup_or_warn(manifest)
      return
    if not os.access(self.directory, os.W_OK):  # a read-only copy: say what is pending, change nothing
      warnings.warn(f"{self.directory} is read-only and a committed request's cleanup is pending there (ledger "
                    "records to append or checkpoints that may hold forgotten ids to delete): run any command "
                    "on the writable original.", SisaWarning, stacklevel=3)
      return
    try:
      with self.store.locked(wait=0), self.store.switch(shared=False):
        self._cleanup_or_warn(self.store.read_manifest())
    except LockTimeout:
      pass  # a writer is at work; it sweeps at its commit

  def _cleanup_or_warn(self, manifest: dict) -> None:
    """Under the writer lock: cleanup, then a warning if unreferenced checkpoints remain."""
    cause = ""
    try:
      self.store.cleanup(manifest)
    except Exception as err:
      cause = f" Cleanup failed: {type(err).__name__}: {err}."
    left = self.store.unreferenced(manifest)
    if left:
      shown = ", ".join(os.path.relpath(p, self.directory) for p in left[:5]) + (" ..." if len(left) > 5 else "")
      warnings.warn(f"{len(left)} checkpoint file(s) under {self.store.path('ckpt')} are not referenced by the manifest "
                    f"and may hold forgotten ids: {shown}.{cause} Every command retries the cleanup.",
                    SisaWarning, stacklevel=4)

  def _check_platform(self, what: str) -> None:
    stored = self._stored
    here = (jax.default_backend(), jax.device_count(), jax.__version__)
    there = (stored["backend"], stored["devices"], stored["jax"])
    if here != there:
      raise ValueError(
          f"{what} is exact only on the backend, device count and jax version the directory was trained with: "
          f"{self.directory} was trained on {there[0]} with {there[1]} device(s) and jax {there[2]}; this process "
          f"has {here[0]} with {here[1]} device(s) and jax {here[2]}. Nothing changed.")

  # -- public operations --------------------------------------------------------------------------
  def train(self, *, exclude_ids: Sequence[int] | None = None, progress: Progress | None = None,
            wait: float | None = None) -> TrainResult:
    """Trains every shard from scratch and writes the directory. ``exclude_ids`` are left out
    from the start (recorded as forgotten): the reference that ``forget`` must reproduce. An
    interrupted ``train`` resumes: checkpoints already written (same content) are reused.

    Returns a :class:`TrainResult` (steps, seconds, digests, cleanup_pending). Refuses a
    directory that already holds a trained ensemble (``forget`` changes one; delete the directory
    to start over), and one with a ledger of deletions (``repair`` rebuilds such a directory and
    keeps every deletion).
    """
    c = self.config
    if exclude_ids is not None:
      exclude_ids = data_lib.as_ids(exclude_ids)
    with self.store.locked(wait):
      if os.path.exists(self.store.path("manifest.json")):
        raise FileExistsError(f"{self.directory} already holds a trained SISA ensemble.")
      if self.store.read_ledger():
        raise FileExistsError(
            f"{self.directory} has a ledger of deletion requests ({self.store.path('ledger.jsonl')}) but no manifest: "
            "training it again would bring the deleted examples back. Run `jaxunlearn sisa repair` "
            "(SISA.repair()) to rebuild its manifest with every ledger id forgotten.")
      excluded = set() if exclude_ids is None else set(int(i) for i in data_lib.check_ids(self.data, exclude_ids))
      if len(excluded) == len(self.data):
        raise ValueError("exclude_ids removes every example: nothing to train on.")
      if self._stored is not None and sorted(excluded) != self._stored["excluded_at_train"]:
        raise ValueError(f"{self.directory} holds an interrupted training run that excluded "
                         f"{len(self._stored['excluded_at_train'])} id(s); resume it with the same exclude_ids, or "
                         "use a new directory.")
      shard, slice_ = plan(self.data.ids, shards=c.shards, slices=c.slices, seed=c.seed)
      plan_digest = self.store.write_plan(self.data.ids, shard, slice_)
      self._plan_arrays = None
      store_lib.fault("train:plan")
      resolved = c.resolve_strategy()
      config = store_lib.seal({
          "format": store_lib.FORMAT, "sisa": dataclasses.asdict(c), "data": plan_lib.data_fingerprint(self.data),
          "plan": plan_digest, "excluded_at_train": sorted(excluded),
          "resolved_strategy": resolved, "backend": jax.default_backend(), "devices": jax.device_count(),
          "jax": jax.__version__, "data_dir": self._data_dir,
      })
      self.store.write_json("config.json", config, indent=1)
      self._stored = config
      store_lib.fault("train:config")
      t0 = time.perf_counter()
      stages, steps, final = self._run({k: 0 for k in range(c.shards)}, excluded, {}, progress, save=True)
      seconds = time.perf_counter() - t0
      manifest = {
          "format": store_lib.FORMAT, "forgotten": sorted(excluded), "excluded_at_train": sorted(excluded),
          "stages": {str(k): stages[k] for k in range(c.shards)},
          "final": {str(k): digest(final[k]) for k in range(c.shards)},
          "train_steps": steps, "train_seconds": seconds, "requests": [],
      }
      store_lib.fault("train:before_commit")
      with self.store.switch(shared=False):
        self.store.write_json("manifest.json", manifest)
        store_lib.fault("train:after_commit")
        pending = self._finish(manifest, "training")
      return TrainResult(steps, seconds, [manifest["final"][str(k)] for k in range(c.shards)], pending)

  @property
  def _fingerprint(self) -> str:
    return self._stored["data"] + json.dumps(self._stored["sisa"], sort_keys=True)

  def forget(self, ids: Sequence[int], *, progress: Progress | None = None,
             wait: float | None = None) -> ForgetResult:
    r"""Forgets ``ids`` exactly: retrains each affected shard from the checkpoint before its
    earliest affected slice, switches to the new checkpoints atomically, logs the request.

    Safe to interrupt at any moment: the old state stays live until the switch, and re-running
    the same call resumes from the checkpoints already written (verified by digest). After the
    switch the request is committed; if logging or sweeping then fails, the record says
    ``"cleanup_pending"`` (and a :class:`SisaWarning` is issued) and the next command finishes it.

    Args:
      ids: integer example ids (see ``jaxunlearn.data.as_ids``).
      progress: ``progress(stage, done, total)`` callback.
      wait: seconds to wait for another writer's lock (``None``: wait as long as it takes).

    Returns a :class:`ForgetResult`: the ledger record's fields (seq, time, ids, already_forgotten,
    retrained {shard: first slice}, steps, seconds, digests before and after) with ``noop``,
    ``remaining`` (training examples left) and ``cleanup_pending``; the same fields on a no-op.

    Raises:
      ValueError: an empty request, ids not in the plan (listed; nothing is changed), or another
        backend / device count / jax version than at training (exactness would be lost).
      TypeError: ids that are not integers.
      CheckpointError: a file needed is missing or corrupted (named; ``repair`` recovers).
      LockTimeout: another writer held the lock longer than ``wait``.
    """
    request = np.unique(data_lib.as_ids(ids))
    if request.size == 0:
      raise ValueError("forget got no ids.")
    with self.store.locked(wait):
      self._check_platform("forget")
      manifest = self.store.live_manifest()
      plan_ids, plan_shard, plan_slice = self._plan()
      unknown = request[~np.isin(request, plan_ids)]
      if unknown.size:
        shown = ", ".join(str(i) for i in unknown[:20]) + (" ..." if unknown.size > 20 else "")
        raise ValueError(f"{unknown.size} id(s) are not in the SISA plan of {self.directory}: {shown}. Nothing changed.")
      with self.store.switch(shared=False):
        self._housekeep(manifest, locked=True)  # what a crash after an earlier commit left
      forgotten = set(manifest["forgotten"])
      already = [int(i) for i in request if int(i) in forgotten]
      new = np.array([i for i in request if int(i) not in forgotten], np.int64)
      if new.size == 0:
        return ForgetResult(noop=True, ids=[int(i) for i in request], already_forgotten=already,
                            remaining=int(len(plan_ids) - len(forgotten)),
                            message="every id was already forgotten; nothing to do.")
      hit = np.isin(plan_ids, new)
      starts: dict[int, int] = {}
      for s, r in zip(plan_shard[hit], plan_slice[hit]):
        starts[int(s)] = min(starts.get(int(s), 10**9), int(r))
      prior = {k: [tuple(x) for x in manifest["stages"][str(k)]] for k in starts}
      t0 = time.perf_counter()
      stages, steps, final = self._run(starts, forgotten | set(new.tolist()), prior, progress, save=True)
      seconds = time.perf_counter() - t0
      seq = 1 + max([r.get("seq", 0) for r in manifest["requests"] + self.store.read_ledger()], default=0)
      record = {
          "seq": seq,
          "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "ids": [int(i) for i in new], "already_forgotten": already,
          "retrained": {str(k): v for k, v in sorted(starts.items())}, "steps": steps, "seconds": seconds,
          "digest_before": {str(k): manifest["final"][str(k)] for k in sorted(starts)},
          "digest_after": {str(k): digest(final[k]) for k in sorted(starts)}, "noop": False,
      }
      for k in starts:
        manifest["stages"][str(k)] = prior[k][:starts[k]] + stages[k]
        manifest["final"][str(k)] = record["digest_after"][str(k)]
      manifest["forgotten"] = sorted(forgotten | set(new.tolist()))
      manifest["requests"].append(record)
      store_lib.fault("forget:before_commit")
      with self.store.switch(shared=False):
        self.store.write_json("manifest.json", manifest)  # the atomic switch: the commit
        store_lib.fault("forget:after_commit")
        pending = self._finish(manifest, f"request #{seq}")
      remaining = int(len(plan_ids) - len(manifest["forgotten"]))
      return ForgetResult(**record, remaining=remaining, cleanup_pending=pending,
                          message=f"forgot {len(record['ids'])} id(s); {remaining} training example(s) remain.")

  def repair(self, *, progress: Progress | None = None, wait: float | None = None) -> RepairResult:
    """Rebuilds the live state from what is intact on disk, keeping every promise in the ledger.

    The forgotten set is the union of the ledger's ids, the ids excluded at training and (when it
    is readable) the manifest's. Every shard is then replayed stage by stage: a stage whose
    checkpoint is intact (every file's sha256, the state digest) and was trained on exactly the
    right ids is reused; the first one missing or damaged is retrained from the last intact stage
    before it (from scratch if there is none), and so is every later one. Repairs a deleted or
    corrupted manifest, an older manifest restored over a newer one, and damaged checkpoints. The
    result is bit-identical to training without the forgotten ids (same backend).

    Returns a :class:`RepairResult` (forgotten, retrained {shard: first retrained stage}, reused,
    steps, seconds, digests, cleanup_pending).
    """
    c = self.config
    if self._stored is None:
      raise FileNotFoundError(f"{self.directory} is not a SISA directory (no config.json): nothing to repair.")
    with self.store.locked(wait):
      self._check_platform("repair")
      ledger = self.store.read_ledger()
      try:
        old = self.store.read_manifest()
      except (CheckpointError, FileNotFoundError):
        old = None
      plan_ids = self._plan()[0]
      forgotten = set(self._stored["excluded_at_train"]) | {i for r in ledger for i in r["ids"]}
      if old is not None:
        forgotten |= set(old["forgotten"])
      unknown = sorted(forgotten - set(plan_ids.tolist()))
      if unknown:
        raise CheckpointError(f"the ledger names ids that are not in the plan ({unknown[:10]}): it belongs to "
                              "another directory?")
      t0 = time.perf_counter()
      stages, steps, final, retrained = self._run({k: 0 for k in range(c.shards)}, forgotten, {}, progress,
                                                  save=True, report=True)
      seconds = time.perf_counter() - t0
      requests = list(old["requests"]) if old is not None else []
      seen = {store_lib.canonical(r) for r in requests}
      requests += [r for r in ledger if store_lib.canonical(r) not in seen]
      requests.sort(key=lambda r: (r.get("time", ""), r.get("seq", 0)))
      manifest = {
          "format": store_lib.FORMAT, "forgotten": sorted(forgotten), "excluded_at_train": self._stored["excluded_at_train"],
          "stages": {str(k): stages[k] for k in range(c.shards)},
          "final": {str(k): digest(final[k]) for k in range(c.shards)},
          "train_steps": old["train_steps"] if old else steps, "train_seconds": old["train_seconds"] if old else seconds,
          "requests": requests,
          "repairs": (old.get("repairs", []) if old else []) + [{
              "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "retrained": {str(k): v for k, v in sorted(retrained.items())}, "steps": steps, "seconds": seconds,
              "manifest_was": "readable" if old is not None else "missing or corrupted"}],
      }
      store_lib.fault("repair:before_commit")
      with self.store.switch(shared=False):
        self.store.write_json("manifest.json", manifest)
        pending = self._finish(manifest, "repair")
      return RepairResult(len(forgotten), {str(k): v for k, v in sorted(retrained.items())},
                          c.shards * c.slices - sum(c.slices - v for v in retrained.values()), steps, seconds,
                          [manifest["final"][str(k)] for k in range(c.shards)], pending)

  @contextlib.contextmanager
  def _reading(self):
    """The live manifest, with the switch lock held shared while the caller reads checkpoints.
    (The manifest and the ledger are read under that lock too: a writer switches the one and
    appends to the other while holding it exclusively.)"""
    with self.store.switch(shared=True):
      manifest = self.store.live_manifest()
    self._housekeep(manifest)
    with self.store.switch(shared=True):
      yield self.store.live_manifest()

  def live_shards(self) -> list[int]:
    """The shards that still hold at least one training example (the others, every example of which
    was forgotten, hold no model and are left out of ``final_params``, ``logits`` and votes)."""
    with self._reading() as manifest:
      return self._live_shards(manifest)

  def _live_shards(self, manifest: dict) -> list[int]:
    ids, shard, _ = self._plan()
    alive = ~np.isin(ids, np.asarray(manifest["forgotten"], np.int64))
    return [k for k in range(self.config.shards) if np.any(alive & (shard == k))]

  def _final_states(self, manifest: dict, shards: Sequence[int]) -> dict:
    return {k: self._restore_state(k, *manifest["stages"][str(k)][-1]) for k in shards}

  def final_params(self) -> Params:
    """The live shard models' final parameters, stacked on a leading axis, in ``live_shards()``
    order (files and digests checked).

    Raises:
      ValueError: every training example has been forgotten: no model remains.
    """
    with self._reading() as manifest:
      live = self._live_shards(manifest)
      if not live:
        raise ValueError(f"every training example of {self.directory} has been forgotten: no model remains.")
      states = self._final_states(manifest, live)
    return lanes.stack([states[k]["params"] for k in live])

  def digests(self) -> list[str]:
    """One sha256 per shard of its final parameters, read from the checkpoints on disk (each file's
    sha256 and the state digest checked against the records, and against the manifest)."""
    with self._reading() as manifest:
      states = self._final_states(manifest, range(self.config.shards))
    return [digest(states[k]["params"]) for k in range(self.config.shards)]

  def logits(self, x: np.ndarray) -> np.ndarray:
    """Every live shard model's logits on ``x``: ``[len(live_shards()), n, C]``."""
    return lanes.predict_stacked(self.apply_fn, self.final_params(), np.asarray(x))

  def status(self) -> dict:
    """Plan sizes, forgotten count, live shards, requests, the last request's cost, and what on
    disk needs attention (unreferenced checkpoints, entries jaxunlearn does not own)."""
    with self._reading() as manifest:
      ids, shard, slice_ = self._plan()
      alive = ~np.isin(ids, np.asarray(manifest["forgotten"], np.int64))
      sizes = [[int(np.sum(alive & (shard == k) & (slice_ == r))) for r in range(self.config.slices)]
               for k in range(self.config.shards)]
      strays = self.store.owned_entries()[1]
      return {
          "config": dataclasses.asdict(self.config), "strategy": self.strategy, "examples": int(len(ids)),
          "forgotten": len(manifest["forgotten"]), "sizes": sizes, "live_shards": [k for k, row in enumerate(sizes) if sum(row)],
          "train_steps": manifest["train_steps"], "train_seconds": manifest["train_seconds"],
          "requests": manifest["requests"], "repairs": manifest.get("repairs", []),
          "unreferenced": self.store.unreferenced(manifest), "not_ours": strays,
      }

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


def aggregate(logits: np.ndarray, how: str = "vote") -> np.ndarray:
  """Ensemble labels from shard logits ``[S, n, C]``: ``"vote"`` (majority of the S argmaxes, ties
  to the class with the larger mean softmax) or ``"softmax"`` (argmax of the mean softmax)."""
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 3:
    raise ValueError(f"logits must be [shards, n, classes], got shape {logits.shape}.")
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  mean = probs.mean(0)
  if how == "softmax":
    return mean.argmax(-1)
  if how != "vote":
    raise ValueError(f"unknown aggregation {how!r}; expected 'vote' or 'softmax'.")
  votes = np.zeros(mean.shape)
  np.add.at(votes, (np.arange(logits.shape[1])[None, :].repeat(logits.shape[0], 0), logits.argmax(-1)), 1.0)
  return (votes + 0.5 * mean).argmax(-1)  # mean < 1 breaks ties without overriding a vote
