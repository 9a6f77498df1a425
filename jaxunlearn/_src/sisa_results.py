"""The typed results of SISA's operations. Each also reads like the mapping it replaces
(``result["steps"]``), so code written against the earlier dicts keeps working."""

from __future__ import annotations

import dataclasses
from typing import Any


class _Mapping:
  """Read access by key as well as by attribute; ``as_dict()`` for JSON."""

  def __getitem__(self, key: str) -> Any:
    if key not in self.keys():
      raise KeyError(key)
    return getattr(self, key)

  def __contains__(self, key: object) -> bool:
    return key in self.keys()

  def keys(self) -> list[str]:
    return [f.name for f in dataclasses.fields(self)]

  def get(self, key: str, default: Any = None) -> Any:
    return getattr(self, key) if key in self.keys() else default

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TrainResult(_Mapping):
  """What ``SISA.train`` did: optimizer steps, seconds, one digest per shard, and the "committed;
  cleanup pending" message if cleaning up after the commit failed (else ``None``)."""

  steps: int
  seconds: float
  digests: list[str]
  cleanup_pending: str | None = None


@dataclasses.dataclass(frozen=True)
class ForgetResult(_Mapping):
  """What ``SISA.forget`` did; the same fields whether or not anything was left to forget.

  Attributes:
    noop: every id was already forgotten (nothing retrained, nothing logged).
    ids: the ids newly forgotten (on a no-op: the ids requested).
    already_forgotten: requested ids that were forgotten before.
    remaining: training examples left after the request.
    seq, time: the request's number and time in the ledger (``0`` and ``""`` on a no-op).
    retrained: ``{shard: first slice retrained}``.
    steps, seconds: the retraining's cost.
    digest_before, digest_after: ``{shard: sha256 of its parameters}`` around the request.
    cleanup_pending: ``None``, or the "committed; cleanup pending" message.
    message: a sentence for people.
  """

  noop: bool
  ids: list[int]
  already_forgotten: list[int]
  remaining: int
  seq: int = 0
  time: str = ""
  retrained: dict[str, int] = dataclasses.field(default_factory=dict)
  steps: int = 0
  seconds: float = 0.0
  digest_before: dict[str, str] = dataclasses.field(default_factory=dict)
  digest_after: dict[str, str] = dataclasses.field(default_factory=dict)
  cleanup_pending: str | None = None
  message: str = ""


@dataclasses.dataclass(frozen=True)
class RepairResult(_Mapping):
  """What ``SISA.repair`` did: ids forgotten, ``{shard: first stage retrained}``, checkpoints
  reused, cost, digests, and cleanup pending (or ``None``)."""

  forgotten: int
  retrained: dict[str, int]
  reused: int
  steps: int
  seconds: float
  digests: list[str]
  cleanup_pending: str | None = None


@dataclasses.dataclass(frozen=True)
class VerifyResult(_Mapping):
  """What ``SISA.verify`` found: ``{shard: bit-identical to retraining}`` for every shard that
  lost ids, ``ok``, and every problem found on disk or in retraining."""

  shards: dict[str, bool]
  ok: bool
  problems: list[str]
