"""Unlearning as an audited operation on a checkpoint: ``jaxunlearn train`` writes a reference
model as an orbax checkpoint; ``jaxunlearn forget`` (``forget_checkpoint``) restores one, runs a
registry method, writes the result as a new checkpoint and appends an audit record to the
ledger beside it.

Crash rules (tested by killing the process at every step):

* OUT is written under a temporary name and renamed into place when complete: it is absent or
  complete, never partial. IN is only read.
* The audit record is stored twice: inside OUT (``audit.json``, atomic with OUT) and as one line
  of ``forget-ledger.jsonl`` beside OUT, appended with a single ``write`` and fsynced after OUT
  is in place. A line torn by a crash is cut off before the next append, and a record found in
  a checkpoint of the directory but missing from the ledger (a crash between the rename and the
  append) is appended then: the ledger never holds a torn line and ends up with every record.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxunlearn._src import data as data_lib
from jaxunlearn._src import loaders, losses, metrics, models, selection, training
from jaxunlearn._src import methods as methods_lib
from jaxunlearn._src.sisa_files import CheckpointError, fsync_dir, fsync_write, read_json
from jaxunlearn._src.sisa_plan import digest

LEDGER = "forget-ledger.jsonl"
_META, _AUDIT, _PARAMS = "jaxunlearn.json", "audit.json", "params"


def _fault(point: str) -> None:
  from jaxunlearn._src import sisa_store

  sisa_store.fault(point)


def resolve_model(model: str, input_shape, num_classes: int) -> tuple[Callable, Any, Callable]:
  """``(apply, params, init)`` of a reference model name, or of ``module:function`` (a user's
  function returning ``(apply, params)``, called with ``input_shape``, ``num_classes`` and
  ``key``; ``init`` then calls it again with a fresh key)."""
  if ":" not in model:
    apply, params = models.create(model, input_shape, num_classes, key=jax.random.key(0))
    return apply, params, models.init_fn(model, input_shape, num_classes)
  mod, _, fn_name = model.partition(":")
  try:
    fn = getattr(importlib.import_module(mod), fn_name)
  except (ImportError, AttributeError) as err:
    raise ValueError(f"cannot load the model function {model!r}: {err}") from None
  out = fn(input_shape=tuple(input_shape), num_classes=num_classes, key=jax.random.key(0))
  if not (isinstance(out, tuple) and len(out) == 2 and callable(out[0])):
    raise ValueError(f"{model} must return (apply, params), got {type(out).__name__}.")
  apply, params = out
  return apply, params, lambda key: fn(input_shape=tuple(input_shape), num_classes=num_classes, key=key)[1]


def _write_checkpoint(out: str, params, meta: dict, audit: dict | None) -> str:
  """Writes ``out`` under a temporary name, then renames it into place; returns the params digest."""
  import orbax.checkpoint as ocp

  out = os.path.abspath(out)
  if os.path.exists(out):
    raise FileExistsError(f"{out} exists; jaxunlearn never overwrites a checkpoint (choose a new --out).")
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  stem = f".{os.path.basename(out)}.tmp"
  for entry in os.listdir(parent):  # leftovers of interrupted writes of this OUT: never complete
    if entry.startswith(stem) and entry[len(stem):].isdigit():
      shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
  tmp = os.path.join(parent, f"{stem}{os.getpid()}")
  os.makedirs(tmp)
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(os.path.join(tmp, _PARAMS), params)
  ckpt.wait_until_finished()
  ckpt.close()
  d = digest(params)
  fsync_write(os.path.join(tmp, _META), json.dumps({**meta, "params_digest": d}, indent=1))
  if audit is not None:
    fsync_write(os.path.join(tmp, _AUDIT), json.dumps({**audit, "output_digest": d}, indent=1))
  _fault("audit:written")
  os.rename(tmp, out)
  fsync_dir(parent)
  _fault("audit:renamed")
  return d


def read_meta(path: str) -> dict | None:
  """The ``jaxunlearn.json`` of a checkpoint written by jaxunlearn, or ``None`` (a user's own)."""
  return read_json(os.path.join(path, _META))


def restore_params(path: str, template):
  """The parameters of the orbax checkpoint ``path`` (ours: ``path/params``; a user's: ``path``
  itself), restored into ``template``'s structure, dtypes and shapes, digest checked when recorded."""
  import orbax.checkpoint as ocp

  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no checkpoint at {path}.")
  meta = read_meta(path)
  where = os.path.join(path, _PARAMS) if meta is not None else path
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), template)
  ckpt = ocp.StandardCheckpointer()
  try:
    params = ckpt.restore(where, abstract)
  except Exception as err:  # orbax raises many types for a damaged or mismatched checkpoint
    raise CheckpointError(f"cannot restore {where} into the model's parameter structure: "
                          f"{type(err).__name__}: {err}") from None
  finally:
    ckpt.close()
  if meta is not None and digest(params) != meta.get("params_digest"):
    raise CheckpointError(f"{where} does not hold the parameters recorded at save (digest mismatch).")
  return params


def train_checkpoint(*, dataset: str = "digits", model: str = "mlp", out: str, epochs: int = 20, seed: int = 0,
                     batch_size: int = 128, learning_rate: float = 1e-3, data_dir: str | None = None) -> dict:
  """Trains a model on ``dataset`` and writes it to ``out`` as an orbax checkpoint with the dataset
  and model recorded; returns the metadata."""
  import optax

  train, test = loaders.load(dataset, data_dir=data_dir)
  apply, _, init = resolve_model(model, train.input_shape, train.num_classes)
  params = init(jax.random.key(seed))
  t0 = time.perf_counter()
  params = training.fit(losses.cross_entropy_loss(apply), params, train, optimizer=optax.adam(learning_rate),
                        epochs=epochs, batch_size=batch_size, seed=seed)
  meta = {"format": 1, "dataset": dataset, "model": model, "data_dir": data_dir, "epochs": epochs, "seed": seed,
          "batch_size": batch_size, "learning_rate": learning_rate, "train_seconds": time.perf_counter() - t0,
          "test_acc": training.dataset_accuracy(apply, params, test)}
  _write_checkpoint(out, params, meta, None)
  return meta


def _ids_digest(ids: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(ids.astype("<i8")).tobytes()).hexdigest()


def forget_checkpoint(checkpoint: str, out: str, *, method: str, ids: Sequence[int] | np.ndarray,
                      dataset: str | None = None, model: str | None = None, hyper: dict | None = None,
                      seed: int = 0, data_dir: str | None = None) -> dict:
  """Restores ``checkpoint``, unlearns ``ids`` with the registry method ``method``, writes the
  result to ``out`` (a new orbax checkpoint; ``checkpoint`` is never modified) and appends the
  audit record to ``forget-ledger.jsonl`` beside ``out``.

  Args:
    checkpoint: an orbax checkpoint: one written by ``jaxunlearn train`` / a previous forget
      (dataset and model read from it), or a user's own (``StandardCheckpointer`` of the params).
    out: where the unlearned checkpoint goes (must not exist).
    method: a classification method of ``jaxunlearn.methods``.
    ids: the training-set ids to forget.
    dataset: the dataset the model was trained on (default: the checkpoint's record).
    model: a reference model name or ``module:function`` returning ``(apply, params)`` (default:
      the checkpoint's record).
    hyper: the method's hyper-parameters overriding its defaults.
    seed: the method's seed.
    data_dir: TFDS data directory.

  Returns:
    The audit record: time, method, hyper-parameters, the ids' sha256 and count, input and output
    parameter digests, forget/retain/test accuracy before and after, seconds.

  Raises:
    FileExistsError: ``out`` exists. ValueError: unknown method, hyper-parameter or ids, missing
    dataset/model. CheckpointError: an unreadable or mismatched checkpoint.
  """
  meta = read_meta(os.path.abspath(checkpoint)) or {}
  dataset = dataset or meta.get("dataset")
  model = model or meta.get("model")
  if not dataset or not model:
    raise ValueError(f"{checkpoint} records no dataset/model (not written by jaxunlearn): pass --dataset and "
                     "--model.")
  if os.path.exists(out):
    raise FileExistsError(f"{os.path.abspath(out)} exists; jaxunlearn never overwrites a checkpoint.")
  m = methods_lib.get(method)
  hyper = dict(hyper or {})
  unknown = sorted(set(hyper) - set(m.defaults))
  if unknown:
    raise ValueError(f"unknown hyper-parameter(s) {unknown} for {method}; it takes {sorted(m.defaults)}.")
  train, test = loaders.load(dataset, data_dir=data_dir or meta.get("data_dir"))
  ids = data_lib.check_ids(train, ids)
  forget_ds, retain_ds = selection.split_forget(train, ids)
  apply, template, init = resolve_model(model, train.input_shape, train.num_classes)
  params = restore_params(checkpoint, template)
  in_digest = digest(params)
  context = {"init_fn": init, "apply_fn": apply, "holdout": test}

  def accuracies(p):
    return {name: metrics.accuracy(training.predict(apply, p, ds.x), ds.y)
            for name, ds in (("forget", forget_ds), ("retain", retain_ds), ("test", test))}

  before = accuracies(params)
  t0 = time.perf_counter()
  new = jax.block_until_ready(m(losses.cross_entropy_loss(apply), params, forget=forget_ds, retain=retain_ds,
                                seed=seed, **{k: context[k] for k in m.needs}, **hyper))
  seconds = time.perf_counter() - t0
  record = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "input": os.path.abspath(checkpoint), "output": os.path.abspath(out), "method": method,
            "hyper": {**m.defaults, **hyper}, "seed": seed, "dataset": dataset, "model": model,
            "ids_sha256": _ids_digest(ids), "ids_count": int(len(ids)), "input_digest": in_digest,
            "before": before, "after": accuracies(new), "seconds": seconds}
  record["output_digest"] = _write_checkpoint(
      out, new, {**{k: v for k, v in meta.items() if k not in ("params_digest",)}, "format": 1, "dataset": dataset,
                 "model": model, "data_dir": data_dir or meta.get("data_dir"), "forgotten_by": method}, record)
  append_ledger(os.path.dirname(os.path.abspath(out)))
  return record


def _records_in(directory: str) -> list[dict]:
  found = []
  for entry in sorted(os.listdir(directory)):
    path = os.path.join(directory, entry, _AUDIT)
    if entry.startswith(".") or not os.path.isfile(path):
      continue
    try:
      with open(path) as f:
        found.append(json.load(f))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
      continue  # a damaged record is reported by read_ledger's caller, not guessed at
  return found


def read_ledger(directory: str) -> list[dict]:
  """The complete records of ``directory``'s ledger (a torn last line, left by a crash, is skipped)."""
  path = os.path.join(directory, LEDGER)
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    return []
  lines = raw.split(b"\n")
  complete = lines[:-1]  # everything before the last newline
  out = []
  for k, line in enumerate(complete, start=1):
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      raise CheckpointError(f"{path} line {k} is corrupted (not JSON).") from None
  return out


def append_ledger(directory: str) -> int:
  """Brings ``directory``'s ledger up to date with the audit records of its checkpoints: cuts off a
  torn last line, appends every record not yet in it (one fsynced write each); returns how many."""
  from jaxunlearn._src.sisa_store import Store

  with Store(directory, 0).locked():
    path = os.path.join(directory, LEDGER)
    if os.path.exists(path):
      with open(path, "rb+") as f:
        raw = f.read()
        end = raw.rfind(b"\n") + 1
        if end != len(raw):  # a torn line: its record is still in its checkpoint and is re-added below
          f.truncate(end)
          f.flush()
          os.fsync(f.fileno())
    have = {(r["output"], r["output_digest"]) for r in read_ledger(directory)}
    added = 0
    for record in _records_in(directory):
      if (record["output"], record["output_digest"]) in have:
        continue
      line = (json.dumps(record, sort_keys=True) + "\n").encode()
      fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
      try:
        _fault("audit:append")
        os.write(fd, line)
        os.fsync(fd)
      finally:
        os.close(fd)
      added += 1
    fsync_dir(directory)
  return added
