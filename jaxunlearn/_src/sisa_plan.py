"""SISA's plan, pure: the configuration, ids dealt into shards and slices, and what each stage
of a shard trains on (its ids, seed and content key). Nothing here touches the disk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import jax
import numpy as np

from jaxunlearn._src import data as data_lib
from jaxunlearn._src import lanes
from jaxunlearn._src.base import Params, path_str


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

  def resolve_strategy(self) -> str:
    """``strategy`` with ``"auto"`` resolved for this process's backend: sequential on CPU and
    across several processes (where each process trains its own shards), vmap otherwise."""
    if self.strategy != "auto":
      return self.strategy
    return "sequential" if jax.default_backend() == "cpu" or jax.process_count() > 1 else "vmap"


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


def stage_ids(plan_: tuple[np.ndarray, np.ndarray, np.ndarray], shard: int, stage: int,
              forgotten: set[int]) -> np.ndarray:
  """The sorted ids stage ``stage`` of ``shard`` trains on: its slices ``0..stage`` less ``forgotten``."""
  ids, sh, sl = plan_
  chosen = ids[(sh == shard) & (sl <= stage)]
  if forgotten:
    chosen = chosen[~np.isin(chosen, np.fromiter(forgotten, np.int64, len(forgotten)))]
  return np.sort(chosen)


def stage_key(fingerprint: str, shard: int, stage: int, ids: np.ndarray) -> str:
  """The content key (checkpoint name) of a stage trained on ``ids``: the ids of a stage determine
  those of every earlier stage of the shard, hence the whole training that produced it."""
  h = hashlib.sha256(json.dumps([fingerprint, shard, stage]).encode())
  h.update(np.asarray(ids, np.int64).tobytes())
  return f"stage_{stage}_{h.hexdigest()[:20]}"


def stage_seed(seed: int, shard: int, stage: int) -> int:
  """The shuffling seed of one shard's stage."""
  mixed = data_lib.mix64(np.array([seed * 1_000_003 + shard * 1_009 + stage], np.uint64))[0]
  return int(mixed >> np.uint64(1))


def digest(params: Params) -> str:
  """sha256 of a pytree: every leaf's path, dtype, shape and bytes, in tree order."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    a = np.asarray(leaf)
    h.update(f"{path_str(path)}|{a.dtype.str}|{a.shape}|".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def data_fingerprint(ds: data_lib.Dataset) -> str:
  """sha256 of a dataset's ids, inputs and labels (a directory refuses other data)."""
  h = hashlib.sha256()
  for a in (ds.ids, ds.x, ds.y):
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()
