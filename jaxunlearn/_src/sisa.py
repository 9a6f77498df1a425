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

The pure plan lives in ``sisa_plan``; the files and their protocols in ``sisa_store`` (primitives in
``sisa_files``); stage-by-stage training and ``verify`` in ``sisa_engine``; commit upkeep and the
readers in ``sisa_upkeep``.

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
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax

from jaxunlearn._src import data as data_lib
from jaxunlearn._src import distributed
from jaxunlearn._src import sisa_plan as plan_lib
from jaxunlearn._src import sisa_store as store_lib
from jaxunlearn._src.base import ApplyFn, LossFn, Params
from jaxunlearn._src.sisa_plan import SisaConfig, digest, plan
from jaxunlearn._src.sisa_engine import Progress, StageEngine
from jaxunlearn._src.sisa_results import ForgetResult, RepairResult, TrainResult, VerifyResult
from jaxunlearn._src.sisa_upkeep import Upkeep
from jaxunlearn._src.sisa_store import CheckpointError, LockTimeout, SisaWarning, read_config

distributed.register_portable_error(CheckpointError)
distributed.register_portable_error(LockTimeout)

__all__ = ("SISA", "CheckpointError", "ForgetResult", "LockTimeout", "RepairResult", "SisaConfig", "SisaWarning",
           "TrainResult", "VerifyResult", "aggregate", "digest", "plan", "read_config")


class SISA(StageEngine, Upkeep):
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

  Several processes (``jax.distributed``): every process constructs the object and makes the same
  ``train`` / ``forget`` / ``repair`` / ``verify`` calls (the readers, ``status``, ``digests``,
  ``logits``, also work in one process alone); shard ``k`` is trained by process
  ``k % jax.process_count()``, process 0 alone writes the directory (lock, checkpoints, manifest,
  ledger) once every owner has finished, and every process returns the same result. Every process must see the directory (a shared filesystem). With the
  ``"sequential"`` strategy (what ``"auto"`` picks there) the models are bit-identical to a
  one-process run's, so a directory may be trained in one process count and forgotten in another.

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
    self._plan_arrays = None

  @property
  def strategy(self) -> str:
    if self.config.strategy != "auto":
      return self.config.strategy
    if self._stored is not None:
      return self._stored["resolved_strategy"]
    return self.config.resolve_strategy()

  def _plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Read (and checked against config.json's sha256) once per object: the plan never changes
    # after training, and every operation consults it, some several times.
    if self._plan_arrays is None:
      self._plan_arrays = self.store.read_plan(self._stored["plan"])
    return self._plan_arrays

  @contextlib.contextmanager
  def _writer(self, wait: float | None):
    """The writer lock, held by process 0; every process goes on once it holds it (or raises
    what it raised)."""
    with contextlib.ExitStack() as stack:
      def take():
        stack.enter_context(self.store.locked(wait))

      distributed.on_lead(take)
      yield

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
    with self._writer(wait):
      distributed.on_lead(self._check_untrained)
      excluded = set() if exclude_ids is None else set(int(i) for i in data_lib.check_ids(self.data, exclude_ids))
      if len(excluded) == len(self.data):
        raise ValueError("exclude_ids removes every example: nothing to train on.")
      if self._stored is not None and sorted(excluded) != self._stored["excluded_at_train"]:
        raise ValueError(f"{self.directory} holds an interrupted training run that excluded "
                         f"{len(self._stored['excluded_at_train'])} id(s); resume it with the same exclude_ids, or "
                         "use a new directory.")

      def write_config() -> dict:
        shard, slice_ = plan(self.data.ids, shards=c.shards, slices=c.slices, seed=c.seed)
        plan_digest = self.store.write_plan(self.data.ids, shard, slice_)
        store_lib.fault("train:plan")
        config = store_lib.seal({
            "format": store_lib.FORMAT, "sisa": dataclasses.asdict(c), "data": plan_lib.data_fingerprint(self.data),
            "plan": plan_digest, "excluded_at_train": sorted(excluded),
            "resolved_strategy": c.resolve_strategy(), "backend": jax.default_backend(), "devices": jax.device_count(),
            "jax": jax.__version__, "data_dir": self._data_dir,
        })
        self.store.write_json("config.json", config, indent=1)
        return config

      self._plan_arrays = None
      self._stored = distributed.on_lead(write_config)
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

      def commit() -> str | None:
        store_lib.fault("train:before_commit")
        with self.store.switch(shared=False):
          self.store.write_json("manifest.json", manifest)
          store_lib.fault("train:after_commit")
          return self._finish(manifest, "training")

      pending = distributed.on_lead(commit)
      return TrainResult(steps, seconds, [manifest["final"][str(k)] for k in range(c.shards)], pending)

  def _check_untrained(self) -> None:
    if os.path.exists(self.store.path("manifest.json")):
      raise FileExistsError(f"{self.directory} already holds a trained SISA ensemble.")
    if self.store.read_ledger():
      raise FileExistsError(
          f"{self.directory} has a ledger of deletion requests ({self.store.path('ledger.jsonl')}) but no manifest: "
          "training it again would bring the deleted examples back. Run `jaxunlearn sisa repair` "
          "(SISA.repair()) to rebuild its manifest with every ledger id forgotten.")

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
    with self._writer(wait):
      self._check_platform("forget")
      plan_ids, plan_shard, plan_slice = self._plan()
      unknown = request[~np.isin(request, plan_ids)]
      if unknown.size:
        shown = ", ".join(str(i) for i in unknown[:20]) + (" ..." if unknown.size > 20 else "")
        raise ValueError(f"{unknown.size} id(s) are not in the SISA plan of {self.directory}: {shown}. Nothing changed.")

      def begin() -> dict:
        manifest = self.store.live_manifest()
        with self.store.switch(shared=False):
          self._housekeep(manifest, locked=True)  # what a crash after an earlier commit left
        return manifest

      manifest = distributed.on_lead(begin)
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

      def commit() -> dict:
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
          return {"record": record, "pending": self._finish(manifest, f"request #{seq}")}

      done = distributed.on_lead(commit)
      record = done["record"]
      remaining = int(len(plan_ids) - len(forgotten | set(new.tolist())))
      return ForgetResult(**record, remaining=remaining, cleanup_pending=done["pending"],
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
    with self._writer(wait):
      self._check_platform("repair")

      def begin() -> dict:
        ledger = self.store.read_ledger()
        try:
          old = self.store.read_manifest()
        except (CheckpointError, FileNotFoundError):
          old = None
        return {"ledger": ledger, "old": old}

      read = distributed.on_lead(begin)
      ledger, old = read["ledger"], read["old"]
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

      def commit() -> str | None:
        store_lib.fault("repair:before_commit")
        with self.store.switch(shared=False):
          self.store.write_json("manifest.json", manifest)
          return self._finish(manifest, "repair")

      pending = distributed.on_lead(commit)
      return RepairResult(len(forgotten), {str(k): v for k, v in sorted(retrained.items())},
                          c.shards * c.slices - sum(c.slices - v for v in retrained.values()), steps, seconds,
                          [manifest["final"][str(k)] for k in range(c.shards)], pending)

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
