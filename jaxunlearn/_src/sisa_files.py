"""The SISA directory's file primitives: the error types, canonical JSON and its seal, file
digests, durable (fsynced, atomically renamed) writes, and the one reader of ``config.json``."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from jaxunlearn._src.sisa_plan import SisaConfig

FORMAT = 2


class CheckpointError(RuntimeError):
  """A file of a SISA directory is missing, corrupted or inconsistent (the message names it)."""


class LockTimeout(RuntimeError):
  """Another process holds the directory's writer lock (the message says who, and since when)."""


class SisaWarning(UserWarning):
  """Something on disk needs attention: cleanup pending after a commit, unreferenced checkpoints
  that may hold forgotten ids, entries jaxunlearn does not own."""


def file_digests(root: str) -> dict[str, str]:
  out = {}
  for dirpath, _, files in os.walk(root):
    for name in files:
      full = os.path.join(dirpath, name)
      with open(full, "rb") as f:
        out[os.path.relpath(full, root)] = hashlib.sha256(f.read()).hexdigest()
  return dict(sorted(out.items()))


def canonical(obj: Any) -> str:
  return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def seal(config: dict) -> dict:
  """``config`` with its ``digest``: the sha256 of everything else in it."""
  body = {k: v for k, v in config.items() if k != "digest"}
  return {**body, "digest": hashlib.sha256(canonical(body).encode()).hexdigest()}


def file_sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def read_json(path: str) -> Any:
  """The JSON content of ``path``, or ``None`` if there is no such file.

  Raises:
    CheckpointError: the file cannot be read or is not valid UTF-8 JSON (the message names it).
  """
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    return None
  except OSError as err:
    raise CheckpointError(f"{path} cannot be read: {err.strerror or err}.") from None
  try:
    return json.loads(raw.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as err:
    raise CheckpointError(f"{path} is corrupted (not valid JSON: {err}); restore it from a backup.") from None


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
  config = read_json(path)
  if config is None:
    return None
  if not isinstance(config, dict) or config.get("format") != FORMAT:
    found = config.get("format") if isinstance(config, dict) else None
    raise CheckpointError(f"{path} has format {found!r}, expected {FORMAT} (written by another jaxunlearn "
                          "version, or not a SISA config).")
  missing = [k for k in _CONFIG_KEYS if k not in config]
  if missing:
    raise CheckpointError(f"{path} is incomplete (missing {', '.join(missing)}); restore it from a backup.")
  if seal(config)["digest"] != config["digest"]:
    raise CheckpointError(
        f"{path} was modified after training (its digest does not match its content): the checkpoints were "
        "trained with the original settings, so forget would retrain with different ones and stop being exact. "
        "Restore the original file; to train with other settings, use a new directory.")
  try:
    SisaConfig(**config["sisa"]).validate()
  except (TypeError, ValueError) as err:
    raise CheckpointError(f"{path} holds an invalid SISA configuration: {err}") from None
  return config


def fsync_write(path: str, text: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  fsync_dir(os.path.dirname(path))


def fsync_dir(path: str) -> None:
  fd = os.open(path or ".", os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)
