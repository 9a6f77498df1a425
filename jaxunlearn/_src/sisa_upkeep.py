"""SISA's upkeep and reading: finishing a commit (ledger, sweep), the housekeeping every command
does after a crash left "cleanup pending", and the readers (live shards, final parameters,
digests, logits, status) that hold the switch lock shared while they read checkpoints.

``Upkeep`` is a base class of ``sisa.SISA``; it reads the attributes ``SISA`` sets (``config``,
``directory``, ``store``, ``apply_fn``, ``strategy``, ``_plan()``) and ``StageEngine``'s
``_restore_state``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Sequence

import jax
import numpy as np

from jaxunlearn._src import lanes
from jaxunlearn._src import sisa_store as store_lib
from jaxunlearn._src.base import Params
from jaxunlearn._src.sisa_files import LockTimeout, SisaWarning
from jaxunlearn._src.sisa_plan import digest


class Upkeep:
  """Commit finishing, housekeeping and the readers of a SISA directory (mixed into ``SISA``)."""

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
    if jax.process_index() != 0:
      return  # several processes: process 0 alone writes the directory (and finishes this)
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
