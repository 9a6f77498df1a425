r"""Exact unlearning by SISA training (Bourtoule et al., IEEE S&P 2021).

The training ids are dealt into :math:`S` shards of :math:`R` slices each. Shard :math:`k` trains
one model in :math:`R` stages; stage :math:`r` trains on slices :math:`1..r` of the shard for
``stage_epochs`` epochs, continuing from stage :math:`r-1`, and ends with an orbax checkpoint
(parameters and optimizer state). Forgetting an id retrains only its shard, from the checkpoint
before its slice, and the result is bit-identical to training from scratch without the id.

Everything that shapes training derives from ids and seeds, never array positions: the plan (a
hash rank of the ids), the batch order (``data.id_order`` salted by seed, shard, stage and epoch),
the initialisation (``fold_in(key(seed), shard)``). Checkpoints are content-addressed by the ids
that went into them, so a prefix of stages untouched by a request is reused as is.

Directory layout::

  D/config.json      hyper-parameters, data fingerprint, plan seed, backend and device count
  D/plan.npz         ids -> (shard, slice)
  D/manifest.json    the live state: forgotten ids, every shard's checkpoint per stage and its
                     digest, the requests so far (replaced atomically: write, fsync, rename)
  D/ledger.jsonl     append-only, fsynced log of requests (reconciled from the manifest)
  D/ckpt/shard_K/stage_R_HASH/   orbax checkpoints;  D/.lock   the lock serialising writers
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax

from jaxunlearn._src import data as data_lib
from jaxunlearn._src import lanes
from jaxunlearn._src.base import ApplyFn, LossFn, Params, path_str

FORMAT = 1
Progress = Callable[[str, int, int], None]


class CheckpointError(RuntimeError):
  """A checkpoint of a SISA directory is missing or corrupted (the message names it)."""


@dataclasses.dataclass(frozen=True)
class SisaConfig:
  """SISA hyper-parameters.

  Attributes:
    shards: number of shards S (independent models).
    slices: slices R per shard (checkpoints per shard).
    epochs: epochs a shard model would get if trained on its whole shard at once; stage ``r``
      gets ``stage_epochs = max(1, round(2 * epochs / (R + 1)))`` epochs, so that the total work
      matches (Bourtoule et al.'s schedule).
    batch_size: examples per step.
    seed: plan, initialisation and shuffling seed.
    strategy: ``"vmap"`` (all shards in one program), ``"sequential"`` or ``"auto"`` (sequential
      on CPU, where vmapping shards gains little or loses, vmap elsewhere); fixed at train time.
    dataset, model, learning_rate: how the command line rebuilds the job (informational for
      library users, who pass their own functions and optimizer).
  """

  shards: int = 8
  slices: int = 4
  epochs: int = 20
  batch_size: int = 128
  seed: int = 0
  strategy: str = "auto"
  dataset: str | None = None
  model: str | None = None
  learning_rate: float | None = None

  @property
  def stage_epochs(self) -> int:
    return max(1, round(2 * self.epochs / (self.slices + 1)))

  def validate(self) -> None:
    for name in ("shards", "slices", "epochs", "batch_size"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"SISA {name} must be a positive integer, got {value!r}.")
    if self.strategy not in ("auto",) + lanes.STRATEGIES:
      raise ValueError(f"unknown strategy {self.strategy!r}; expected auto, vmap or sequential.")


def plan(ids: np.ndarray, *, shards: int, slices: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Deals ``ids`` into ``(shard, slice)``: ids ranked by a seeded hash, the rank ``p`` going to
  shard ``p % S`` and slice ``(p // S) % R`` (slice sizes differ by at most one).

  Returns ``(shard, slice)`` int arrays aligned with ``ids``.
  """
  ids = np.asarray(ids)
  rank = np.empty(len(ids), np.int64)
  rank[data_lib.id_order(ids, seed=seed, epoch=0x5154A)] = np.arange(len(ids))
  shard = rank % shards
  slice_ = (rank // shards) * slices // max(1, -(-len(ids) // shards))
  return shard.astype(np.int32), np.minimum(slice_, slices - 1).astype(np.int32)


def digest(params: Params) -> str:
  """sha256 of a pytree: every leaf's path, dtype, shape and bytes, in tree order."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    a = np.asarray(leaf)
    h.update(f"{path_str(path)}|{a.dtype.str}|{a.shape}|".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def _data_fingerprint(ds: data_lib.Dataset) -> str:
  h = hashlib.sha256()
  for a in (ds.ids, ds.x, ds.y):
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _file_digests(root: str) -> dict[str, str]:
  out = {}
  for dirpath, _, files in os.walk(root):
    for name in files:
      full = os.path.join(dirpath, name)
      with open(full, "rb") as f:
        out[os.path.relpath(full, root)] = hashlib.sha256(f.read()).hexdigest()
  return dict(sorted(out.items()))


def _fsync_write(path: str, text: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  _fsync_dir(os.path.dirname(path))


def _fsync_dir(path: str) -> None:
  fd = os.open(path or ".", os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _stage_seed(seed: int, shard: int, stage: int) -> int:
  mixed = data_lib._mix64(np.array([seed * 1_000_003 + shard * 1_009 + stage], np.uint64))[0]
  return int(mixed >> np.uint64(1))


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
  ):
    self.directory = os.path.abspath(directory)
    self.data = data
    self.init_fn, self.apply_fn, self.loss_fn, self.optimizer = init_fn, apply_fn, loss_fn, optimizer
    stored = self._stored = self._read_config()
    if config is None:
      if stored is None:
        raise FileNotFoundError(f"{self.directory} is not a SISA directory (no config.json); train one first.")
      config = SisaConfig(**stored["sisa"])
    elif stored is not None and dataclasses.asdict(config) != stored["sisa"]:
      raise ValueError(f"{self.directory} was trained with {stored['sisa']}, not {dataclasses.asdict(config)}.")
    config.validate()
    self.config = config
    if stored is not None and stored["data"] != _data_fingerprint(data):
      raise ValueError(f"the data differs from the data {self.directory} was trained on (fingerprint mismatch).")
    self._table = None
    self._template = None

  # -- paths and files ----------------------------------------------------------------------------
  def _path(self, *parts: str) -> str:
    return os.path.join(self.directory, *parts)

  def _read_config(self) -> dict | None:
    try:
      with open(self._path("config.json")) as f:
        return json.load(f)
    except FileNotFoundError:
      return None

  def _read_manifest(self) -> dict:
    path = self._path("manifest.json")
    try:
      with open(path) as f:
        manifest = json.load(f)
    except FileNotFoundError:
      raise FileNotFoundError(f"{path} is missing: the directory was never fully trained (run train).") from None
    except json.JSONDecodeError as err:
      raise CheckpointError(f"{path} is corrupted: {err}") from None
    if manifest.get("format") != FORMAT:
      raise CheckpointError(f"{path} has format {manifest.get('format')!r}, expected {FORMAT}.")
    return manifest

  @contextlib.contextmanager
  def _locked(self):
    os.makedirs(self.directory, exist_ok=True)
    with open(self._path(".lock"), "a+") as f:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # blocks until another writer is done
      try:
        yield
      finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)

  def _plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(self._path("plan.npz")) as z:
      return z["ids"], z["shard"], z["slice"]

  @property
  def strategy(self) -> str:
    if self.config.strategy != "auto":
      return self.config.strategy
    if self._stored is not None:
      return self._stored["resolved_strategy"]
    return "sequential" if jax.default_backend() == "cpu" else "vmap"

  # -- training machinery -------------------------------------------------------------------------
  def _state_template(self):
    if self._template is None:
      p = self.init_fn(jax.random.key(0))
      self._template = {"params": p, "opt_state": self.optimizer.init(p)}
    return self._template

  def _stage_ids(self, plan_: tuple, shard: int, stage: int, forgotten: set[int]) -> np.ndarray:
    ids, sh, sl = plan_
    chosen = ids[(sh == shard) & (sl <= stage)]
    if forgotten:
      chosen = chosen[~np.isin(chosen, np.fromiter(forgotten, np.int64, len(forgotten)))]
    return np.sort(chosen)

  def _stage_key(self, shard: int, stage: int, ids: np.ndarray) -> str:
    h = hashlib.sha256(json.dumps([self._fingerprint, shard, stage]).encode())
    h.update(np.asarray(ids, np.int64).tobytes())
    return f"stage_{stage}_{h.hexdigest()[:20]}"

  def _stage_rows(self, shard: int, stage: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = self.config
    positions = self.data.positions(ids)
    seed = _stage_seed(c.seed, shard, stage)
    parts = [lanes.epoch_rows(positions, ids, batch_size=c.batch_size, seed=seed, epoch=e) for e in range(c.stage_epochs)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

  def _save(self, shard: int, name: str, state) -> str:
    import orbax.checkpoint as ocp

    path = self._path("ckpt", f"shard_{shard:03d}", name)
    if os.path.exists(path):  # a leftover of an interrupted run: its content is not trusted
      shutil.rmtree(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(path, state)
    ckpt.wait_until_finished()
    ckpt.close()
    d = digest(state)
    # Written after orbax's atomic commit of the directory: the state digest and every file's sha256.
    _fsync_write(path + ".sha256", json.dumps({"state": d, "files": _file_digests(path)}, indent=0))
    return d

  def _restore(self, shard: int, name: str, expected: str | None):
    import orbax.checkpoint as ocp

    path = self._path("ckpt", f"shard_{shard:03d}", name)
    if not os.path.isdir(path):
      raise CheckpointError(f"checkpoint {path} is missing.")
    try:
      with open(path + ".sha256") as f:
        record = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
      raise CheckpointError(f"checkpoint {path} has no readable integrity record ({path}.sha256).") from None
    if expected is not None and record["state"] != expected:
      raise CheckpointError(f"checkpoint {path} does not hold the state the manifest recorded.")
    # Check every file before orbax reads any (a damaged file must not reach the reader).
    found = _file_digests(path)
    for rel, want in record["files"].items():
      if rel not in found:
        raise CheckpointError(f"checkpoint file {os.path.join(path, rel)} is missing.")
      if found[rel] != want:
        raise CheckpointError(f"checkpoint file {os.path.join(path, rel)} is corrupted (sha256 mismatch).")
    expected = record["state"]
    ckpt = ocp.StandardCheckpointer()
    try:
      state = ckpt.restore(path, self._state_template())
    except Exception as err:  # orbax raises many types for damaged files
      raise CheckpointError(f"checkpoint {path} is corrupted or unreadable: {type(err).__name__}: {err}") from None
    finally:
      ckpt.close()
    if expected is not None and digest(state) != expected:
      raise CheckpointError(f"checkpoint {path} is corrupted: its digest differs from the one recorded at save.")
    return state

  def _reusable(self, shard: int, name: str):
    """A complete checkpoint left by an interrupted run with the same content key, or None."""
    try:
      state = self._restore(shard, name, None)
    except CheckpointError:
      return None
    return state, digest(state)

  def _run(self, starts: dict[int, int], forgotten: set[int], prior: dict, progress: Progress | None, save: bool):
    """Trains the shards in ``starts`` from their start stage to the end; returns
    ``(stages {shard: [(name, digest)] for the retrained stages}, steps, final params {shard: tree})``."""
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
        states[shard] = self._restore(shard, name, dig)
    if self._table is None:
      self._table = lanes.table(self.data)
    stages: dict[int, list] = {k: [] for k in starts}
    steps = 0
    total = sum(c.slices - s for s in starts.values())
    done = 0
    for stage in range(min(starts.values(), default=c.slices), c.slices):
      active = [k for k in starts if starts[k] <= stage]
      stage_ids = {k: self._stage_ids(plan_, k, stage, forgotten) for k in active}
      keys = {k: self._stage_key(k, stage, stage_ids[k]) for k in active}
      todo = []
      for k in active:
        reused = self._reusable(k, keys[k]) if save else None
        if reused is not None:
          states[k] = reused[0]
          stages[k].append((keys[k], reused[1]))
        else:
          todo.append(k)
      if todo:
        steps += self._train_stage(todo, stage, {k: stage_ids[k] for k in todo}, states, template)
        for k in todo:
          stages[k].append((keys[k], self._save(k, keys[k], states[k]) if save else digest(states[k])))
      done += len(active)
      if progress is not None:
        progress(f"stage {stage + 1}/{c.slices}", done, total)
    return stages, steps, {k: states[k]["params"] for k in starts}

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

  # -- public operations --------------------------------------------------------------------------
  def train(self, *, exclude_ids: Sequence[int] | None = None, progress: Progress | None = None) -> dict:
    """Trains every shard from scratch and writes the directory. ``exclude_ids`` are left out
    from the start (recorded as forgotten): the reference that ``forget`` must reproduce.

    Returns a summary ``{"steps", "seconds", "digests"}``. Refuses a directory that already holds a
    trained ensemble (``forget`` changes one; delete the directory to start over).
    """
    c = self.config
    if exclude_ids is not None:
      exclude_ids = data_lib.as_ids(exclude_ids)
    with self._locked():
      if os.path.exists(self._path("manifest.json")):
        raise FileExistsError(f"{self.directory} already holds a trained SISA ensemble.")
      excluded = set() if exclude_ids is None else set(int(i) for i in data_lib.check_ids(self.data, exclude_ids))
      if len(excluded) == len(self.data):
        raise ValueError("exclude_ids removes every example: nothing to train on.")
      shard, slice_ = plan(self.data.ids, shards=c.shards, slices=c.slices, seed=c.seed)
      np.savez(self._path("plan.npz.tmp.npz"), ids=np.asarray(self.data.ids, np.int64), shard=shard, slice=slice_)
      os.replace(self._path("plan.npz.tmp.npz"), self._path("plan.npz"))
      resolved = "sequential" if (c.strategy == "auto" and jax.default_backend() == "cpu") else (
          "vmap" if c.strategy == "auto" else c.strategy)
      config = {
          "format": FORMAT, "sisa": dataclasses.asdict(c), "data": _data_fingerprint(self.data),
          "resolved_strategy": resolved, "backend": jax.default_backend(), "devices": jax.device_count(),
          "jax": jax.__version__,
      }
      _fsync_write(self._path("config.json"), json.dumps(config, indent=1))
      self._stored = config
      t0 = time.perf_counter()
      stages, steps, final = self._run({k: 0 for k in range(c.shards)}, excluded, {}, progress, save=True)
      seconds = time.perf_counter() - t0
      manifest = {
          "format": FORMAT, "forgotten": sorted(excluded), "excluded_at_train": sorted(excluded),
          "stages": {str(k): stages[k] for k in range(c.shards)},
          "final": {str(k): digest(final[k]) for k in range(c.shards)},
          "train_steps": steps, "train_seconds": seconds, "requests": [],
      }
      _fsync_write(self._path("manifest.json"), json.dumps(manifest))
      self._sweep(manifest)
      return {"steps": steps, "seconds": seconds, "digests": [manifest["final"][str(k)] for k in range(c.shards)]}

  @property
  def _fingerprint(self) -> str:
    return self._stored["data"] + json.dumps(self._stored["sisa"], sort_keys=True)

  def forget(self, ids: Sequence[int], *, progress: Progress | None = None) -> dict:
    r"""Forgets ``ids`` exactly: retrains each affected shard from the checkpoint before its
    earliest affected slice, switches to the new checkpoints atomically, logs the request.

    Safe to interrupt at any moment: the old state stays live until the switch, and re-running
    the same call resumes from the checkpoints already written (verified by digest).

    Returns the ledger record: ``{"seq", "time", "ids", "already_forgotten", "retrained"
    {shard: first slice}, "steps", "seconds", "digest_before", "digest_after", "noop"}``.

    Raises:
      ValueError: an empty request, or ids not in the plan (listed; nothing is changed).
      CheckpointError: a checkpoint needed is missing or corrupted (named).
    """
    request = np.unique(data_lib.as_ids(ids))
    if request.size == 0:
      raise ValueError("forget got no ids.")
    with self._locked():
      manifest = self._read_manifest()
      plan_ids, plan_shard, plan_slice = self._plan()
      unknown = request[~np.isin(request, plan_ids)]
      if unknown.size:
        shown = ", ".join(str(i) for i in unknown[:20]) + (" ..." if unknown.size > 20 else "")
        raise ValueError(f"{unknown.size} id(s) are not in the SISA plan of {self.directory}: {shown}. Nothing changed.")
      forgotten = set(manifest["forgotten"])
      already = [int(i) for i in request if int(i) in forgotten]
      new = np.array([i for i in request if int(i) not in forgotten], np.int64)
      self._reconcile_ledger(manifest)
      if new.size == 0:
        self._sweep(manifest)
        return {"noop": True, "ids": [int(i) for i in request], "already_forgotten": already,
                "message": "every id was already forgotten; nothing to do."}
      hit = np.isin(plan_ids, new)
      starts: dict[int, int] = {}
      for s, r in zip(plan_shard[hit], plan_slice[hit]):
        starts[int(s)] = min(starts.get(int(s), 10**9), int(r))
      prior = {k: [tuple(x) for x in manifest["stages"][str(k)]] for k in starts}
      t0 = time.perf_counter()
      stages, steps, final = self._run(starts, forgotten | set(new.tolist()), prior, progress, save=True)
      seconds = time.perf_counter() - t0
      record = {
          "seq": len(manifest["requests"]) + 1,
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
      _fsync_write(self._path("manifest.json"), json.dumps(manifest))  # the atomic switch
      self._reconcile_ledger(manifest)
      self._sweep(manifest)
      return record

  def _reconcile_ledger(self, manifest: dict) -> None:
    """Appends (fsynced) every committed request the ledger does not hold yet."""
    path = self._path("ledger.jsonl")
    logged = 0
    if os.path.exists(path):
      with open(path) as f:
        lines = f.read().splitlines()
      for line in lines:
        try:
          logged = max(logged, json.loads(line)["seq"])
        except (json.JSONDecodeError, KeyError):
          continue  # a torn last line from a crash mid-append; the record is re-appended below
    missing = [r for r in manifest["requests"] if r["seq"] > logged]
    if missing:
      with open(path, "a") as f:
        for r in missing:
          f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())

  def _sweep(self, manifest: dict) -> None:
    """Deletes checkpoints the manifest does not reference (e.g. ones that saw forgotten ids)."""
    live = {(k, name) for k, st in manifest["stages"].items() for name, _ in st}
    root = self._path("ckpt")
    if not os.path.isdir(root):
      return
    for shard_dir in os.listdir(root):
      k = str(int(shard_dir.split("_")[1]))
      for entry in os.listdir(os.path.join(root, shard_dir)):
        name = entry[:-len(".sha256")] if entry.endswith(".sha256") else entry
        if (k, name) not in live:
          target = os.path.join(root, shard_dir, entry)
          shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)

  def final_params(self) -> Params:
    """The S shard models' final parameters, stacked on a leading axis (digests checked)."""
    manifest = self._read_manifest()
    trees = []
    for k in range(self.config.shards):
      name, dig = manifest["stages"][str(k)][-1]
      trees.append(self._restore(k, name, dig)["params"])
    return lanes.stack(trees)

  def digests(self) -> list[str]:
    """One sha256 per shard of its final parameters (as recorded; ``verify`` recomputes them)."""
    manifest = self._read_manifest()
    return [manifest["final"][str(k)] for k in range(self.config.shards)]

  def logits(self, x: np.ndarray) -> np.ndarray:
    """Every shard model's logits on ``x``: ``[S, n, C]``."""
    return lanes.predict(self.apply_fn, self.final_params(), np.asarray(x))

  def status(self) -> dict:
    """Plan sizes, forgotten count, requests, and the last request's cost."""
    manifest = self._read_manifest()
    ids, shard, slice_ = self._plan()
    alive = ~np.isin(ids, np.asarray(manifest["forgotten"], np.int64))
    sizes = [[int(np.sum(alive & (shard == k) & (slice_ == r))) for r in range(self.config.slices)]
             for k in range(self.config.shards)]
    return {
        "config": dataclasses.asdict(self.config), "strategy": self.strategy, "examples": int(len(ids)),
        "forgotten": len(manifest["forgotten"]), "sizes": sizes, "train_steps": manifest["train_steps"],
        "train_seconds": manifest["train_seconds"], "requests": manifest["requests"],
    }

  def verify(self, *, progress: Progress | None = None) -> dict:
    """Retrains from scratch every shard that lost ids (in a scratch run, nothing written) and
    compares its parameters' digest with the live model's. Returns ``{"shards": {k: bool}, "ok"}``."""
    manifest = self._read_manifest()
    stored = self._stored
    if stored["backend"] != jax.default_backend() or stored["devices"] != jax.device_count():
      raise ValueError(
          f"exactness is per backend and device count: the directory was trained on {stored['backend']} with "
          f"{stored['devices']} device(s), this process has {jax.default_backend()} with {jax.device_count()}.")
    ids, shard, _ = self._plan()
    forgotten = set(manifest["forgotten"])
    affected = sorted({int(s) for i, s in zip(ids, shard) if int(i) in forgotten}) or list(range(self.config.shards))
    _, _, final = self._run({k: 0 for k in affected}, forgotten, {}, progress, save=False)
    result = {str(k): digest(final[k]) == manifest["final"][str(k)] for k in affected}
    return {"shards": result, "ok": all(result.values())}


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
