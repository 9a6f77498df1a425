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

  D/config.json      hyper-parameters, data fingerprint, plan digest, ids excluded at training,
                     backend, device count and jax version; sealed by its own sha256 (an edit is
                     refused, never silently trained with)
  D/plan.npz         ids -> (shard, slice)
  D/manifest.json    the live state: forgotten ids, every shard's checkpoint per stage and its
                     digest, the requests so far (replaced atomically: write, fsync, rename)
  D/ledger.jsonl     append-only, fsynced log of deletion requests: the record of what was
                     promised. Every id in it stays forgotten: a manifest that lacks one (an older
                     copy restored) is refused until ``repair``
  D/ckpt/shard_K/stage_R_HASH/   orbax checkpoints (+ ``.sha256`` records of every file)
  D/.lock            held by the writer (train, forget, repair); says who holds it and since when
  D/.switch          held exclusively while the manifest is switched and old checkpoints are
                     swept, shared by readers: a reader never sees a checkpoint vanish

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
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import socket
import sys
import time
import warnings
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax

from jaxunlearn._src import data as data_lib
from jaxunlearn._src import lanes
from jaxunlearn._src.base import ApplyFn, LossFn, Params, path_str

FORMAT = 2
Progress = Callable[[str, int, int], None]
_SHARD_DIR = re.compile(r"shard_([0-9]{3,})")
# What jaxunlearn writes in a shard directory: a checkpoint, its integrity record, their temporaries.
_OWNED = re.compile(r"(stage_[0-9]+_[0-9a-f]{20})(\.sha256(\.tmp[0-9]+)?|\.orbax-checkpoint-tmp.*)?")


class CheckpointError(RuntimeError):
  """A file of a SISA directory is missing, corrupted or inconsistent (the message names it)."""


class LockTimeout(RuntimeError):
  """Another process holds the directory's writer lock (the message says who, and since when)."""


class SisaWarning(UserWarning):
  """Something on disk needs attention: cleanup pending after a commit, unreferenced checkpoints
  that may hold forgotten ids, entries jaxunlearn does not own."""


def _fault(point: str) -> None:
  """Fault-injection hook: called at every step of the commit protocols; the fault-injection tests
  replace it to stop the process at ``point``. Does nothing otherwise."""


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
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"SISA {name} must be a positive integer, got {value!r}.")
    if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
      raise ValueError(f"SISA seed must be a non-negative integer, got {self.seed!r}.")
    if self.strategy not in ("auto",) + lanes.STRATEGIES:
      raise ValueError(f"unknown strategy {self.strategy!r}; expected auto, vmap or sequential.")
    lr = self.learning_rate
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer))
                           or not math.isfinite(lr) or lr <= 0):
      raise ValueError(f"SISA learning_rate must be a finite number > 0, got {lr!r}.")


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


def _canonical(obj: Any) -> str:
  return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _seal(config: dict) -> dict:
  """``config`` with its ``digest``: the sha256 of everything else in it."""
  body = {k: v for k, v in config.items() if k != "digest"}
  return {**body, "digest": hashlib.sha256(_canonical(body).encode()).hexdigest()}


def _file_sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


_CONFIG_KEYS = ("format", "sisa", "data", "plan", "excluded_at_train", "resolved_strategy", "backend", "devices",
                "jax", "data_dir", "digest")


def read_config(directory: str) -> dict | None:
  """The validated ``config.json`` of a SISA directory, or ``None`` if there is none yet.

  Raises:
    ValueError: ``directory`` exists and is not a directory.
    CheckpointError: the file is unreadable, not JSON, incomplete, or was edited after training
      (its digest does not match): the checkpoints were trained with the original settings.
  """
  directory = os.path.abspath(directory)
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise ValueError(f"{directory} is a file, not a SISA directory.")
  path = os.path.join(directory, "config.json")
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    return None
  except OSError as err:
    raise CheckpointError(f"{path} cannot be read: {err.strerror or err}.") from None
  try:
    config = json.loads(raw.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as err:
    raise CheckpointError(f"{path} is corrupted (not valid JSON: {err}); restore it from a backup.") from None
  if not isinstance(config, dict) or config.get("format") != FORMAT:
    found = config.get("format") if isinstance(config, dict) else None
    raise CheckpointError(f"{path} has format {found!r}, expected {FORMAT} (written by another jaxunlearn "
                          "version, or not a SISA config).")
  missing = [k for k in _CONFIG_KEYS if k not in config]
  if missing:
    raise CheckpointError(f"{path} is incomplete (missing {', '.join(missing)}); restore it from a backup.")
  if _seal(config)["digest"] != config["digest"]:
    raise CheckpointError(
        f"{path} was modified after training (its digest does not match its content): the checkpoints were "
        "trained with the original settings, so forget would retrain with different ones and stop being exact. "
        "Restore the original file; to train with other settings, use a new directory.")
  try:
    SisaConfig(**config["sisa"]).validate()
  except (TypeError, ValueError) as err:
    raise CheckpointError(f"{path} holds an invalid SISA configuration: {err}") from None
  return config


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
    if stored is None and os.path.exists(self._path("manifest.json")):
      raise CheckpointError(f"{self._path('config.json')} is missing but the directory holds a trained ensemble: "
                            "restore config.json from a backup (its digest seals the training settings).")
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
    self._data_dir = data_dir
    self._table = None
    self._template = None

  # -- paths and files ----------------------------------------------------------------------------
  def _path(self, *parts: str) -> str:
    return os.path.join(self.directory, *parts)

  def _read_manifest(self) -> dict:
    path = self._path("manifest.json")
    try:
      with open(path) as f:
        manifest = json.load(f)
    except FileNotFoundError:
      if self._read_ledger() or self._owned_entries()[0]:
        raise CheckpointError(
            f"{path} is missing, but the directory holds checkpoints and/or a ledger of deletions. Do not retrain "
            "it blindly: run `jaxunlearn sisa repair` (SISA.repair()), which rebuilds the manifest from the "
            "checkpoints that are intact and keeps every id of the ledger forgotten.") from None
      raise FileNotFoundError(f"{path} is missing: the directory was never fully trained (run train, which "
                              "resumes from the checkpoints already written).") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
      raise CheckpointError(f"{path} is corrupted: {err}. Run `jaxunlearn sisa repair` to rebuild it.") from None
    except OSError as err:
      raise CheckpointError(f"{path} cannot be read: {err.strerror or err}.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
      found = manifest.get("format") if isinstance(manifest, dict) else None
      raise CheckpointError(f"{path} has format {found!r}, expected {FORMAT}.")
    keys = ("forgotten", "stages", "final", "requests", "train_steps", "train_seconds")
    shards = [str(k) for k in range(self.config.shards)]
    if any(k not in manifest for k in keys) or any(k not in manifest["stages"] or k not in manifest["final"]
                                                   for k in shards):
      raise CheckpointError(f"{path} is incomplete or does not match config.json's {self.config.shards} shards; "
                            "run `jaxunlearn sisa repair` to rebuild it.")
    return manifest

  def _live_manifest(self) -> dict:
    """The manifest, checked against the ledger: every id the ledger promised is forgotten in it."""
    manifest = self._read_manifest()
    promised = {i for r in self._read_ledger() for i in r["ids"]}
    reverted = sorted(promised - set(manifest["forgotten"]))
    if reverted:
      shown = ", ".join(map(str, reverted[:20])) + (" ..." if len(reverted) > 20 else "")
      raise CheckpointError(
          f"{self._path('manifest.json')} does not forget {len(reverted)} id(s) that the ledger records as deleted "
          f"({shown}): an older manifest was restored? Nothing was read or changed. Run `jaxunlearn sisa repair` "
          "(SISA.repair()) to bring the models back in line with the ledger.")
    return manifest

  def _lock_file(self, name: str, mode: str):
    path = self._path(name)
    try:
      os.makedirs(self.directory, exist_ok=True)
      return open(path, mode)
    except IsADirectoryError:
      raise CheckpointError(f"{path} is a directory; it must be jaxunlearn's lock file (remove it).") from None
    except OSError as err:
      raise CheckpointError(f"cannot open {path}: {err.strerror or err} (is {self.directory} writable?)") from None

  @contextlib.contextmanager
  def _locked(self, wait: float | None = None):
    """The writer lock. ``wait``: seconds to wait for another writer (``None``: as long as it takes,
    saying who holds it). The lock file says who holds it and since when."""
    with self._lock_file(".lock", "a+") as f:
      start, told = time.monotonic(), False
      while True:
        try:
          fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
          break
        except BlockingIOError:
          holder = self._lock_holder(f)
          if wait is not None and time.monotonic() - start >= wait:
            raise LockTimeout(f"{self._path('.lock')} is held by {holder}; gave up after {wait:g} s. If that "
                              "process is stopped (not just busy), resume or end it; the lock is released when "
                              "it exits.") from None
          if not told:
            print(f"jaxunlearn: waiting for {self._path('.lock')}, held by {holder}", file=sys.stderr, flush=True)
            told = True
          time.sleep(0.05)
      try:
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:200],
                            "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}))
        f.flush()
        yield
      finally:
        with contextlib.suppress(OSError):
          f.seek(0)
          f.truncate()
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)

  @staticmethod
  def _lock_holder(f) -> str:
    try:
      f.seek(0)
      info = json.loads(f.read() or "{}")
      return (f"process {info['pid']} on {info['host']} ({info['command']!r}) since {info['since']}")
    except (json.JSONDecodeError, KeyError, TypeError, OSError):
      return "another process (not yet identified)"

  @contextlib.contextmanager
  def _switch(self, shared: bool):
    """Shared by readers while they read the manifest and its checkpoints; exclusive while a writer
    switches the manifest and sweeps, so that a reader never meets a checkpoint being deleted."""
    with self._lock_file(".switch", "a+") as f:
      fcntl.flock(f.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
      try:
        yield
      finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)

  def _plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    path = self._path("plan.npz")
    try:
      digest_ok = _file_sha256(path) == self._stored["plan"]
    except OSError as err:
      raise CheckpointError(f"{path} cannot be read: {err.strerror or err}.") from None
    if not digest_ok:
      raise CheckpointError(f"{path} is corrupted or was replaced (its sha256 differs from the one in config.json).")
    try:
      with np.load(path) as z:
        ids, shard, slice_ = z["ids"], z["shard"], z["slice"]
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as err:
      raise CheckpointError(f"{path} is corrupted: {type(err).__name__}: {err}") from None
    return ids, shard, slice_

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
        states[shard] = self._restore(shard, name, dig)
    if self._table is None:
      self._table = lanes.table(self.data)
    stages: dict[int, list] = {k: [] for k in starts}
    trained: dict[int, int] = {}
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
          trained.setdefault(k, stage)
          stages[k].append((keys[k], self._save(k, keys[k], states[k]) if save else digest(states[k])))
          _fault("run:saved")
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
  def _read_ledger(self) -> list[dict]:
    """The ledger's records. A torn last line (a crash mid-append) is skipped: its record is still
    in the manifest and is appended again by the next command. A damaged line elsewhere is an error."""
    path = self._path("ledger.jsonl")
    try:
      with open(path, "rb") as f:
        raw = f.read()
    except FileNotFoundError:
      return []
    except OSError as err:
      raise CheckpointError(f"{path} cannot be read: {err.strerror or err}.") from None
    lines = raw.split(b"\n")
    records = []
    for n, line in enumerate(lines, 1):
      try:
        records += self._parse_ledger_line(line)
      except ValueError as err:
        if n == len(lines):  # the last line, with no newline after it: torn
          continue
        raise CheckpointError(f"{path}:{n} is corrupted ({err}); the ledger is the record of every deletion "
                              "promised: restore it from a backup.") from None
    return records

  @staticmethod
  def _parse_ledger_line(line: bytes) -> list[dict]:
    """``[record]`` (``[]`` for a blank line); ``ValueError`` for anything else."""
    if not line.strip():
      return []
    try:
      record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
      raise ValueError(str(err)) from None
    if not isinstance(record, dict) or not isinstance(record.get("ids"), list):
      raise ValueError("not a request record")
    return [record]

  def _reconcile_ledger(self, manifest: dict) -> None:
    """Appends (fsynced) every committed request the ledger does not hold, compared by content
    (not by sequence number: a manifest rebuilt or restored numbers its requests afresh)."""
    _fault("ledger:before")
    path = self._path("ledger.jsonl")
    logged = {_canonical(r) for r in self._read_ledger()}
    missing = [r for r in manifest["requests"] if _canonical(r) not in logged]
    if not missing:
      return
    with open(path, "a+b") as f:
      f.seek(0)
      raw = f.read()
      if raw and not raw.endswith(b"\n"):
        # A crash mid-append: a whole record whose newline is missing is kept and ended; a torn
        # one is cut (it is in ``missing``, hence re-appended whole).
        keep = raw.rfind(b"\n") + 1
        tail = raw[keep:]
        try:
          whole = bool(self._parse_ledger_line(tail))
        except ValueError:
          whole = False
        if whole:
          f.write(b"\n")
        else:
          f.truncate(keep)
      f.seek(0, os.SEEK_END)
      for r in missing:
        f.write((json.dumps(r) + "\n").encode())
        _fault("ledger:append")
      f.flush()
      os.fsync(f.fileno())

  def _owned_entries(self) -> tuple[list[tuple[int, str, str]], list[str]]:
    """``([(shard, name, path)] of what jaxunlearn wrote under ckpt/, [paths of anything else])``."""
    root = self._path("ckpt")
    owned, strays = [], []
    try:
      shard_dirs = sorted(os.listdir(root))
    except (FileNotFoundError, NotADirectoryError):
      return owned, strays
    for shard_dir in shard_dirs:
      full = os.path.join(root, shard_dir)
      m = _SHARD_DIR.fullmatch(shard_dir)
      if m is None or not os.path.isdir(full) or int(m.group(1)) >= self.config.shards:
        strays.append(full)
        continue
      for entry in sorted(os.listdir(full)):
        e = _OWNED.fullmatch(entry)
        if e is None:
          strays.append(os.path.join(full, entry))
        else:
          owned.append((int(m.group(1)), e.group(1), os.path.join(full, entry)))
    return owned, strays

  def _unreferenced(self, manifest: dict) -> list[str]:
    live = {(int(k), name) for k, st in manifest["stages"].items() for name, _ in st}
    return [path for k, name, path in self._owned_entries()[0] if (k, name) not in live]

  def _sweep(self, manifest: dict) -> None:
    """Deletes the checkpoints the manifest does not reference (ones that saw forgotten ids, and
    leftovers of interrupted runs). Entries jaxunlearn did not write are left alone."""
    for target in self._unreferenced(manifest):
      _fault("sweep:delete")
      if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)
      else:
        os.remove(target)
    _fault("sweep:done")

  def _cleanup(self, manifest: dict) -> None:
    self._reconcile_ledger(manifest)
    self._sweep(manifest)

  def _finish(self, manifest: dict, what: str) -> str | None:
    """Ledger and sweep after a commit; returns ``None``, or the "cleanup pending" message (also
    warned) when they fail: the commit stands, and the next command finishes the job."""
    try:
      self._cleanup(manifest)
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
    logged = {_canonical(r) for r in self._read_ledger()}
    if not (any(_canonical(r) not in logged for r in manifest["requests"]) or self._unreferenced(manifest)):
      return
    if locked:
      self._cleanup_or_warn(manifest)
      return
    try:
      with self._locked(wait=0), self._switch(shared=False):
        self._cleanup_or_warn(self._read_manifest())
    except LockTimeout:
      pass  # a writer is at work; it sweeps at its commit

  def _cleanup_or_warn(self, manifest: dict) -> None:
    """Under the writer lock: cleanup, then a warning if unreferenced checkpoints remain."""
    cause = ""
    try:
      self._cleanup(manifest)
    except Exception as err:
      cause = f" Cleanup failed: {type(err).__name__}: {err}."
    left = self._unreferenced(manifest)
    if left:
      shown = ", ".join(os.path.relpath(p, self.directory) for p in left[:5]) + (" ..." if len(left) > 5 else "")
      warnings.warn(f"{len(left)} checkpoint file(s) under {self._path('ckpt')} are not referenced by the manifest "
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
            wait: float | None = None) -> dict:
    """Trains every shard from scratch and writes the directory. ``exclude_ids`` are left out
    from the start (recorded as forgotten): the reference that ``forget`` must reproduce. An
    interrupted ``train`` resumes: checkpoints already written (same content) are reused.

    Returns a summary ``{"steps", "seconds", "digests"}``. Refuses a directory that already holds a
    trained ensemble (``forget`` changes one; delete the directory to start over), and one with a
    ledger of deletions (``repair`` rebuilds such a directory and keeps every deletion).
    """
    c = self.config
    if exclude_ids is not None:
      exclude_ids = data_lib.as_ids(exclude_ids)
    with self._locked(wait):
      if os.path.exists(self._path("manifest.json")):
        raise FileExistsError(f"{self.directory} already holds a trained SISA ensemble.")
      if self._read_ledger():
        raise FileExistsError(
            f"{self.directory} has a ledger of deletion requests ({self._path('ledger.jsonl')}) but no manifest: "
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
      plan_path = self._path("plan.npz")
      np.savez(plan_path + ".tmp.npz", ids=np.asarray(self.data.ids, np.int64), shard=shard, slice=slice_)
      os.replace(plan_path + ".tmp.npz", plan_path)
      _fault("train:plan")
      resolved = "sequential" if (c.strategy == "auto" and jax.default_backend() == "cpu") else (
          "vmap" if c.strategy == "auto" else c.strategy)
      config = _seal({
          "format": FORMAT, "sisa": dataclasses.asdict(c), "data": _data_fingerprint(self.data),
          "plan": _file_sha256(plan_path), "excluded_at_train": sorted(excluded),
          "resolved_strategy": resolved, "backend": jax.default_backend(), "devices": jax.device_count(),
          "jax": jax.__version__, "data_dir": self._data_dir,
      })
      _fsync_write(self._path("config.json"), json.dumps(config, indent=1))
      self._stored = config
      _fault("train:config")
      t0 = time.perf_counter()
      stages, steps, final = self._run({k: 0 for k in range(c.shards)}, excluded, {}, progress, save=True)
      seconds = time.perf_counter() - t0
      manifest = {
          "format": FORMAT, "forgotten": sorted(excluded), "excluded_at_train": sorted(excluded),
          "stages": {str(k): stages[k] for k in range(c.shards)},
          "final": {str(k): digest(final[k]) for k in range(c.shards)},
          "train_steps": steps, "train_seconds": seconds, "requests": [],
      }
      _fault("train:before_commit")
      with self._switch(shared=False):
        _fsync_write(self._path("manifest.json"), json.dumps(manifest))
        _fault("train:after_commit")
        pending = self._finish(manifest, "training")
      return {"steps": steps, "seconds": seconds, "digests": [manifest["final"][str(k)] for k in range(c.shards)],
              "cleanup_pending": pending}

  @property
  def _fingerprint(self) -> str:
    return self._stored["data"] + json.dumps(self._stored["sisa"], sort_keys=True)

  def forget(self, ids: Sequence[int], *, progress: Progress | None = None, wait: float | None = None) -> dict:
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

    Returns the ledger record: ``{"seq", "time", "ids", "already_forgotten", "retrained"
    {shard: first slice}, "steps", "seconds", "digest_before", "digest_after", "remaining", "noop",
    "cleanup_pending"}``; ``remaining`` is the number of training examples left.

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
    with self._locked(wait):
      self._check_platform("forget")
      manifest = self._live_manifest()
      plan_ids, plan_shard, plan_slice = self._plan()
      unknown = request[~np.isin(request, plan_ids)]
      if unknown.size:
        shown = ", ".join(str(i) for i in unknown[:20]) + (" ..." if unknown.size > 20 else "")
        raise ValueError(f"{unknown.size} id(s) are not in the SISA plan of {self.directory}: {shown}. Nothing changed.")
      with self._switch(shared=False):
        self._housekeep(manifest, locked=True)  # what a crash after an earlier commit left
      forgotten = set(manifest["forgotten"])
      already = [int(i) for i in request if int(i) in forgotten]
      new = np.array([i for i in request if int(i) not in forgotten], np.int64)
      if new.size == 0:
        return {"noop": True, "ids": [int(i) for i in request], "already_forgotten": already,
                "remaining": int(len(plan_ids) - len(forgotten)),
                "message": "every id was already forgotten; nothing to do."}
      hit = np.isin(plan_ids, new)
      starts: dict[int, int] = {}
      for s, r in zip(plan_shard[hit], plan_slice[hit]):
        starts[int(s)] = min(starts.get(int(s), 10**9), int(r))
      prior = {k: [tuple(x) for x in manifest["stages"][str(k)]] for k in starts}
      t0 = time.perf_counter()
      stages, steps, final = self._run(starts, forgotten | set(new.tolist()), prior, progress, save=True)
      seconds = time.perf_counter() - t0
      seq = 1 + max([r.get("seq", 0) for r in manifest["requests"] + self._read_ledger()], default=0)
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
      _fault("forget:before_commit")
      with self._switch(shared=False):
        _fsync_write(self._path("manifest.json"), json.dumps(manifest))  # the atomic switch: the commit
        _fault("forget:after_commit")
        pending = self._finish(manifest, f"request #{seq}")
      return {**record, "remaining": int(len(plan_ids) - len(manifest["forgotten"])), "cleanup_pending": pending}

  def repair(self, *, progress: Progress | None = None, wait: float | None = None) -> dict:
    """Rebuilds the live state from what is intact on disk, keeping every promise in the ledger.

    The forgotten set is the union of the ledger's ids, the ids excluded at training and (when it
    is readable) the manifest's. Every shard is then replayed stage by stage: a stage whose
    checkpoint is intact (every file's sha256, the state digest) and was trained on exactly the
    right ids is reused; the first one missing or damaged is retrained from the last intact stage
    before it (from scratch if there is none), and so is every later one. Repairs a deleted or
    corrupted manifest, an older manifest restored over a newer one, and damaged checkpoints. The
    result is bit-identical to training without the forgotten ids (same backend).

    Returns ``{"forgotten", "retrained" {shard: first retrained stage}, "reused", "steps",
    "seconds", "digests", "cleanup_pending"}``.
    """
    c = self.config
    if self._stored is None:
      raise FileNotFoundError(f"{self.directory} is not a SISA directory (no config.json): nothing to repair.")
    with self._locked(wait):
      self._check_platform("repair")
      ledger = self._read_ledger()
      try:
        old = self._read_manifest()
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
      seen = {_canonical(r) for r in requests}
      requests += [r for r in ledger if _canonical(r) not in seen]
      requests.sort(key=lambda r: (r.get("time", ""), r.get("seq", 0)))
      manifest = {
          "format": FORMAT, "forgotten": sorted(forgotten), "excluded_at_train": self._stored["excluded_at_train"],
          "stages": {str(k): stages[k] for k in range(c.shards)},
          "final": {str(k): digest(final[k]) for k in range(c.shards)},
          "train_steps": old["train_steps"] if old else steps, "train_seconds": old["train_seconds"] if old else seconds,
          "requests": requests,
          "repairs": (old.get("repairs", []) if old else []) + [{
              "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "retrained": {str(k): v for k, v in sorted(retrained.items())}, "steps": steps, "seconds": seconds,
              "manifest_was": "readable" if old is not None else "missing or corrupted"}],
      }
      _fault("repair:before_commit")
      with self._switch(shared=False):
        _fsync_write(self._path("manifest.json"), json.dumps(manifest))
        pending = self._finish(manifest, "repair")
      total_stages = c.shards * c.slices
      return {"forgotten": len(forgotten), "retrained": {str(k): v for k, v in sorted(retrained.items())},
              "reused": total_stages - sum(c.slices - v for v in retrained.values()), "steps": steps,
              "seconds": seconds, "digests": [manifest["final"][str(k)] for k in range(c.shards)],
              "cleanup_pending": pending}

  @contextlib.contextmanager
  def _reading(self):
    """The live manifest, with the switch lock held shared while the caller reads checkpoints.
    (The manifest and the ledger are read under that lock too: a writer switches the one and
    appends to the other while holding it exclusively.)"""
    with self._switch(shared=True):
      manifest = self._live_manifest()
    self._housekeep(manifest)
    with self._switch(shared=True):
      yield self._live_manifest()

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
    return {k: self._restore(k, *manifest["stages"][str(k)][-1]) for k in shards}

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
    return lanes.predict(self.apply_fn, self.final_params(), np.asarray(x))

  def status(self) -> dict:
    """Plan sizes, forgotten count, live shards, requests, the last request's cost, and what on
    disk needs attention (unreferenced checkpoints, entries jaxunlearn does not own)."""
    with self._reading() as manifest:
      ids, shard, slice_ = self._plan()
      alive = ~np.isin(ids, np.asarray(manifest["forgotten"], np.int64))
      sizes = [[int(np.sum(alive & (shard == k) & (slice_ == r))) for r in range(self.config.slices)]
               for k in range(self.config.shards)]
      owned, strays = self._owned_entries()
      return {
          "config": dataclasses.asdict(self.config), "strategy": self.strategy, "examples": int(len(ids)),
          "forgotten": len(manifest["forgotten"]), "sizes": sizes, "live_shards": self._live_shards(manifest),
          "train_steps": manifest["train_steps"], "train_seconds": manifest["train_seconds"],
          "requests": manifest["requests"], "repairs": manifest.get("repairs", []),
          "unreferenced": self._unreferenced(manifest), "not_ours": strays,
      }

  def verify(self, *, progress: Progress | None = None) -> dict:
    """Checks the directory against the disk and against retraining.

    1. Every live checkpoint (every shard, every stage) is restored: each file's sha256 and the
       state digest must match the records and the manifest; final parameters must be finite.
    2. Every shard that lost ids is retrained from scratch (a scratch run, nothing written) and
       its digest compared with the checkpoint's.

    Returns ``{"shards": {k: bool}, "ok", "problems": [messages]}``.
    """
    self._check_platform("verify")
    problems: list[str] = []
    on_disk: dict[int, str] = {}
    with self._reading() as manifest:
      for k in range(self.config.shards):
        for stage, (name, dig) in enumerate(manifest["stages"][str(k)]):
          try:
            state = self._restore(k, name, dig)
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
    return {"shards": result, "ok": ok, "problems": problems}


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
