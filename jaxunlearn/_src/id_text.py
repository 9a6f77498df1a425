"""Ids and forget sets written as text (the command line's ``--ids``, ``--ids-file``, ``--forget``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from jaxunlearn._src.data import INT64, Dataset, check_ids
from jaxunlearn._src.selection import class_ids, random_ids


def parse_forget(spec: str, ds: Dataset, *, seed: int) -> np.ndarray:
  """Selects forget ids from a textual spec: ``class:3``, ``class:3,5``, ``random:0.1`` or ``ids:FILE``.

  ``ids:FILE`` reads one integer id per line (blank lines and ``#`` comments ignored).
  """
  kind, _, arg = spec.partition(":")
  if kind == "class" and arg:
    try:
      classes = [int(c) for c in arg.split(",")]
    except ValueError:
      raise ValueError(f"class spec must list integers, got {arg!r}.") from None
    return class_ids(ds, classes)
  if kind == "random" and arg:
    try:
      fraction = float(arg)
    except ValueError:
      raise ValueError(f"random spec needs a fraction in (0, 1), got {arg!r}.") from None
    return random_ids(ds, fraction, seed=seed)
  if kind == "ids" and arg:
    return check_ids(ds, read_ids_file(arg))
  raise ValueError(f"unknown forget spec {spec!r}; expected class:K[,K...], random:FRACTION or ids:FILE.")


_ID_TOKEN = re.compile(r"[+-]?[0-9]+")


def parse_id_tokens(tokens: Sequence[str], where: Sequence[str]) -> np.ndarray:
  """Parses textual ids: each token must be ASCII digits with an optional sign (``"1_9"``,
  ``"3.0"``, ``"1e3"`` and non-ASCII digits are refused). ``where[i]`` names token ``i`` in errors."""
  out = []
  for token, place in zip(tokens, where):
    if not _ID_TOKEN.fullmatch(token):
      raise ValueError(f"{place}: expected an integer id, got {token!r}.")
    value = int(token)
    if not INT64.min <= value <= INT64.max:
      raise ValueError(f"{place}: id {token} is out of the int64 range.")
    out.append(value)
  return np.asarray(out, dtype=np.int64)


def read_ids_file(path: str) -> np.ndarray:
  """Reads one integer id per line (blank lines and ``#`` comments ignored).

  The file is UTF-8 text, with or without a byte-order mark; UTF-16 with a byte-order mark is
  decoded too. Anything else (a directory, binary data, another encoding, a malformed line) raises
  ``ValueError`` naming the file and line.
  """
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except IsADirectoryError:
    raise ValueError(f"{path} is a directory, not a file of ids.") from None
  except FileNotFoundError:
    raise ValueError(f"{path}: no such file of ids.") from None
  except PermissionError:
    raise ValueError(f"{path}: permission denied reading the file of ids.") from None
  if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
    encoding = "utf-16"
  else:
    encoding = "utf-8-sig"
  try:
    text = raw.decode(encoding)
  except UnicodeDecodeError as err:
    raise ValueError(f"{path} is not UTF-8 text (byte {err.start} cannot be decoded); write one integer id per "
                     "line as plain text.") from None
  tokens, where = [], []
  for lineno, line in enumerate(text.splitlines(), 1):
    token = line.split("#", 1)[0].strip()
    if token:
      tokens.append(token)
      where.append(f"{path}:{lineno}")
  return parse_id_tokens(tokens, where)


def cli_ids(ids: str | None, ids_file: str | None) -> np.ndarray:
  """The ids of a command's ``--ids 3,17,42`` (comma-separated) or ``--ids-file PATH`` option."""
  if ids_file:
    return read_ids_file(ids_file)
  tokens = [t.strip() for t in (ids or "").split(",") if t.strip()]
  return parse_id_tokens(tokens, [f"--ids entry {i + 1}" for i in range(len(tokens))])
