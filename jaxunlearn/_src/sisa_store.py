"""The SISA directory on disk: locks, atomic writes, the sealed config, the manifest, the ledger,
the plan file and the orbax checkpoints with their integrity records, and the sweep. The only
module of the SISA code that touches files (and the only one that imports orbax); its primitives
(errors, seals, durable writes, the ``config.json`` reader) are in ``sisa_files``.

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

The commit protocols that use these files are described in ``sisa``.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import time
import zipfile
from typing import Any

import numpy as np

from jaxunlearn._src.sisa_plan import digest
from jaxunlearn._src.sisa_files import (FORMAT, CheckpointError, LockTimeout, SisaWarning, canonical, file_digests,
                                         file_sha256, fsync_write, read_config, seal)

__all__ = ("FORMAT", "CheckpointError", "LockTimeout", "SisaWarning", "Store", "canonical", "fault", "read_config", "seal")

_SHARD_DIR = re.compile(r"shard_([0-9]{3,})")
# What jaxunlearn writes in a shard directory: a checkpoint, its integrity record, their temporaries.
_OWNED = re.compile(r"(stage_[0-9]+_[0-9a-f]{20})(\.sha256(\.tmp[0-9]+)?|\.orbax-checkpoint-tmp.*)?")


def fault(point: str) -> None:
  """Fault-injection hook: called at every step of the commit protocols; the fault-injection tests
  replace it to stop the process at ``point``. Does nothing otherwise."""


def _checkpointer():
  """An orbax checkpointer for this process alone: in several processes, SISA's checkpoints are
  written by process 0 and read by the shard's owner, neither waiting for the others (orbax's
  default would make every process join every save and restore)."""
  import jax
  import orbax.checkpoint as ocp

  if jax.process_count() == 1:
    return ocp.StandardCheckpointer()
  me = jax.process_index()
  return ocp.StandardCheckpointer(
      multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me}))


class Store:
  """One SISA directory's files. ``shards`` bounds what counts as a shard directory of ours."""

  def __init__(self, directory: str, shards: int):
    self.directory = os.path.abspath(directory)
    self.shards = shards

  def path(self, *parts: str) -> str:
    return os.path.join(self.directory, *parts)

  def read_manifest(self) -> dict:
    path = self.path("manifest.json")
    try:
      with open(path) as f:
        manifest = json.load(f)
    except FileNotFoundError:
      if self.read_ledger() or self.owned_entries()[0]:
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
    shards = [str(k) for k in range(self.shards)]
    if any(k not in manifest for k in keys) or any(k not in manifest["stages"] or k not in manifest["final"]
                                                   for k in shards):
      raise CheckpointError(f"{path} is incomplete or does not match config.json's {self.shards} shards; "
                            "run `jaxunlearn sisa repair` to rebuild it.")
    return manifest

  def live_manifest(self) -> dict:
    """The manifest, checked against the ledger: every id the ledger promised is forgotten in it."""
    manifest = self.read_manifest()
    promised = {i for r in self.read_ledger() for i in r["ids"]}
    reverted = sorted(promised - set(manifest["forgotten"]))
    if reverted:
      shown = ", ".join(map(str, reverted[:20])) + (" ..." if len(reverted) > 20 else "")
      raise CheckpointError(
          f"{self.path('manifest.json')} does not forget {len(reverted)} id(s) that the ledger records as deleted "
          f"({shown}): an older manifest was restored? Nothing was read or changed. Run `jaxunlearn sisa repair` "
          "(SISA.repair()) to bring the models back in line with the ledger.")
    return manifest

  def lock_file(self, name: str, mode: str):
    path = self.path(name)
    try:
      os.makedirs(self.directory, exist_ok=True)
      return open(path, mode)
    except IsADirectoryError:
      raise CheckpointError(f"{path} is a directory; it must be jaxunlearn's lock file (remove it).") from None
    except OSError as err:
      raise CheckpointError(f"cannot open {path}: {err.strerror or err} (is {self.directory} writable?)") from None

  @contextlib.contextmanager
  def locked(self, wait: float | None = None):
    """The writer lock. ``wait``: seconds to wait for another writer (``None``: as long as it takes,
    saying who holds it). The lock file says who holds it and since when."""
    with self.lock_file(".lock", "a+") as f:
      start, told = time.monotonic(), False
      while True:
        try:
          fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
          break
        except BlockingIOError:
          holder = self.lock_holder(f)
          if wait is not None and time.monotonic() - start >= wait:
            raise LockTimeout(f"{self.path('.lock')} is held by {holder}; gave up after {wait:g} s. If that "
                              "process is stopped (not just busy), resume or end it; the lock is released when "
                              "it exits.") from None
          if not told:
            print(f"jaxunlearn: waiting for {self.path('.lock')}, held by {holder}", file=sys.stderr, flush=True)
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
  def lock_holder(f) -> str:
    try:
      f.seek(0)
      info = json.loads(f.read() or "{}")
      return (f"process {info['pid']} on {info['host']} ({info['command']!r}) since {info['since']}")
    except (json.JSONDecodeError, KeyError, TypeError, OSError):
      return "another process (not yet identified)"

  @contextlib.contextmanager
  def switch(self, shared: bool):
    """Shared by readers while they read the manifest and its checkpoints; exclusive while a writer
    switches the manifest and sweeps, so that a reader never meets a checkpoint being deleted."""
    if shared and not os.access(self.directory, os.W_OK):
      # A read-only copy (a mounted archive): nobody can switch or sweep it, so readers need no
      # lock; share the existing lock file if there is one.
      if not os.path.isfile(self.path(".switch")):
        yield
        return
      mode = "r"
    else:
      mode = "a+"
    with self.lock_file(".switch", mode) as f:
      fcntl.flock(f.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
      try:
        yield
      finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)

  def read_plan(self, expected_sha256: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, shard, slice)`` from plan.npz, checked against its sha256 in config.json."""
    path = self.path("plan.npz")
    try:
      digest_ok = file_sha256(path) == expected_sha256
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

  def save(self, shard: int, name: str, state) -> str:
    path = self.path("ckpt", f"shard_{shard:03d}", name)
    if os.path.exists(path):  # a leftover of an interrupted run: its content is not trusted
      shutil.rmtree(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ckpt = _checkpointer()
    ckpt.save(path, state)
    ckpt.wait_until_finished()
    ckpt.close()
    d = digest(state)
    # Written after orbax's atomic commit of the directory: the state digest and every file's sha256.
    fsync_write(path + ".sha256", json.dumps({"state": d, "files": file_digests(path)}, indent=0))
    return d

  def restore(self, shard: int, name: str, expected: str | None, template):
    """The checkpoint's state, every file's sha256 checked before orbax reads any, and its digest
    against ``expected`` (the manifest's) when given."""
    path = self.path("ckpt", f"shard_{shard:03d}", name)
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
    found = file_digests(path)
    for rel, want in record["files"].items():
      if rel not in found:
        raise CheckpointError(f"checkpoint file {os.path.join(path, rel)} is missing.")
      if found[rel] != want:
        raise CheckpointError(f"checkpoint file {os.path.join(path, rel)} is corrupted (sha256 mismatch).")
    expected = record["state"]
    ckpt = _checkpointer()
    try:
      state = ckpt.restore(path, template)
    except Exception as err:  # orbax raises many types for damaged files
      raise CheckpointError(f"checkpoint {path} is corrupted or unreadable: {type(err).__name__}: {err}") from None
    finally:
      ckpt.close()
    if expected is not None and digest(state) != expected:
      raise CheckpointError(f"checkpoint {path} is corrupted: its digest differs from the one recorded at save.")
    return state

  def reusable(self, shard: int, name: str, template):
    """A complete checkpoint left by an interrupted run with the same content key, or None."""
    try:
      state = self.restore(shard, name, None, template)
    except CheckpointError:
      return None
    return state, digest(state)

  def read_ledger(self) -> list[dict]:
    """The ledger's records. A torn last line (a crash mid-append) is skipped: its record is still
    in the manifest and is appended again by the next command. A damaged line elsewhere is an error."""
    path = self.path("ledger.jsonl")
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
        records += self.parse_ledger_line(line)
      except ValueError as err:
        if n == len(lines):  # the last line, with no newline after it: torn
          continue
        raise CheckpointError(f"{path}:{n} is corrupted ({err}); the ledger is the record of every deletion "
                              "promised: restore it from a backup.") from None
    return records

  @staticmethod
  def parse_ledger_line(line: bytes) -> list[dict]:
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

  def reconcile_ledger(self, manifest: dict) -> None:
    """Appends (fsynced) every committed request the ledger does not hold, compared by content
    (not by sequence number: a manifest rebuilt or restored numbers its requests afresh)."""
    fault("ledger:before")
    path = self.path("ledger.jsonl")
    logged = {canonical(r) for r in self.read_ledger()}
    missing = [r for r in manifest["requests"] if canonical(r) not in logged]
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
          whole = bool(self.parse_ledger_line(tail))
        except ValueError:
          whole = False
        if whole:
          f.write(b"\n")
        else:
          f.truncate(keep)
      f.seek(0, os.SEEK_END)
      for r in missing:
        f.write((json.dumps(r) + "\n").encode())
        fault("ledger:append")
      f.flush()
      os.fsync(f.fileno())

  def owned_entries(self) -> tuple[list[tuple[int, str, str]], list[str]]:
    """``([(shard, name, path)] of what jaxunlearn wrote under ckpt/, [paths of anything else])``."""
    root = self.path("ckpt")
    owned, strays = [], []
    try:
      shard_dirs = sorted(os.listdir(root))
    except (FileNotFoundError, NotADirectoryError):
      return owned, strays
    for shard_dir in shard_dirs:
      full = os.path.join(root, shard_dir)
      m = _SHARD_DIR.fullmatch(shard_dir)
      if m is None or not os.path.isdir(full) or int(m.group(1)) >= self.shards:
        strays.append(full)
        continue
      for entry in sorted(os.listdir(full)):
        e = _OWNED.fullmatch(entry)
        if e is None:
          strays.append(os.path.join(full, entry))
        else:
          owned.append((int(m.group(1)), e.group(1), os.path.join(full, entry)))
    return owned, strays

  def unreferenced(self, manifest: dict) -> list[str]:
    live = {(int(k), name) for k, st in manifest["stages"].items() for name, _ in st}
    return [path for k, name, path in self.owned_entries()[0] if (k, name) not in live]

  def sweep(self, manifest: dict) -> None:
    """Deletes the checkpoints the manifest does not reference (ones that saw forgotten ids, and
    leftovers of interrupted runs). Entries jaxunlearn did not write are left alone."""
    for target in self.unreferenced(manifest):
      fault("sweep:delete")
      if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)
      else:
        os.remove(target)
    fault("sweep:done")

  def write_json(self, name: str, obj: Any, *, indent: int | None = None) -> None:
    """Writes ``name`` atomically (temporary file, fsync, rename, fsync of the directory)."""
    fsync_write(self.path(name), json.dumps(obj, indent=indent))

  def write_plan(self, ids: np.ndarray, shard: np.ndarray, slice_: np.ndarray) -> str:
    """Writes plan.npz atomically; returns its sha256 (sealed into config.json)."""
    path = self.path("plan.npz")
    np.savez(path + ".tmp.npz", ids=np.asarray(ids, np.int64), shard=shard, slice=slice_)
    os.replace(path + ".tmp.npz", path)
    return file_sha256(path)

  def cleanup(self, manifest: dict) -> None:
    self.reconcile_ledger(manifest)
    self.sweep(manifest)

