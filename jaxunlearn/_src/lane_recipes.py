"""The recipes for N models at once: each unlearns N stacked models as lanes of one compiled
program (``jaxunlearn score`` runs them). Same hyper-parameters as the one-model recipes in
``recipes``; their defaults live there, and the registry passes them."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax

from jaxunlearn._src import data as data_lib
from jaxunlearn._src import lanes
from jaxunlearn._src.ascent import gradient_ascent as _gradient_ascent_tx
from jaxunlearn._src.importance import fisher_diagonal
from jaxunlearn._src.recipes import cached_optimizer, ssd_alpha
from jaxunlearn._src.reset import reset_params
from jaxunlearn._src.ssd import ssd_dampen


@dataclasses.dataclass(frozen=True)
class Stacked:
  """N trained models and what unlearning them needs.

  Attributes:
    loss_fn: ``loss(params, batch) -> scalar`` of one model.
    init_fn: ``init(key) -> params`` of one model (for methods that re-initialise layers).
    params: the N models' parameters stacked on a leading axis.
    train, forget, retain: the training set and its split.
    seeds: one shuffling seed per model.
    strategy: ``"vmap"`` (one program, lanes sharded over devices) or ``"sequential"``.
    key: a PRNG key for methods that draw (fresh layers).
    apply_fn: ``apply(params, x) -> logits`` of one model (for methods that read predictions:
      distillation, adversarial examples), or ``None``.
    holdout: held-out examples distributed like the forget set (SCRUB+R's rewinding), or ``None``.
    first: the index among all N models of this stack's first model (``score`` in several
      processes gives each process a slice of the N): draws salted by model index use it, so a
      model's result does not depend on how the N are split.
  """

  loss_fn: Callable
  init_fn: Callable
  params: Any
  train: data_lib.Dataset
  forget: data_lib.Dataset
  retain: data_lib.Dataset
  seeds: Sequence[int]
  strategy: str
  key: jax.Array
  apply_fn: Callable | None = None
  holdout: data_lib.Dataset | None = None
  first: int = 0

  def context(self, name: str) -> Any:
    """The model context a recipe ``needs`` (``"init_fn"``, ``"apply_fn"``, ``"holdout"``)."""
    value = getattr(self, name, None) if name in ("init_fn", "apply_fn", "holdout") else None
    if value is None:
      raise ValueError(f"this Stacked has no {name!r} (a method needs it).")
    return value

  @property
  def n(self) -> int:
    return len(self.seeds)

  def fit(self, params, ds, optimizer, *, epochs: int, batch_size: int, loss=None):
    """``epochs`` passes of ``ds`` on every lane, lane ``m`` shuffled with ``seeds[m]``."""
    schedule = lanes.epochs_schedule(ds, lanes=self.n, epochs=epochs, batch_size=batch_size, seeds=self.seeds)
    out, _ = lanes.run(loss or self.loss_fn, optimizer, params, lanes.init_states(optimizer, params),
                       lanes.table(ds), schedule, strategy=self.strategy)
    return out


def finetune(s: Stacked, *, learning_rate: float, epochs: int, batch_size: int):
  return s.fit(s.params, s.retain, cached_optimizer("adam", learning_rate), epochs=epochs, batch_size=batch_size)


@functools.lru_cache(maxsize=16)
def _ascent(learning_rate: float):
  return optax.chain(_gradient_ascent_tx(), cached_optimizer("sgd", learning_rate))


def gradient_ascent(s: Stacked, *, learning_rate: float, epochs: int, batch_size: int):
  return s.fit(s.params, s.forget, _ascent(learning_rate), epochs=epochs, batch_size=batch_size)


@functools.lru_cache(maxsize=16)
def _difference_loss(loss_fn, forget_weight: float, retain_weight: float):
  # Gradient difference as one loss over a {"forget", "retain"} batch pair: its gradient is
  # retain_weight * g_retain - forget_weight * g_forget, what ``gradient_difference`` forms.
  def loss(params, batch):
    return retain_weight * loss_fn(params, batch["retain"]) - forget_weight * loss_fn(params, batch["forget"])

  return loss


def gradient_difference(s: Stacked, *, learning_rate: float, epochs: int, batch_size: int, forget_weight: float,
                        retain_weight: float):
  opt = cached_optimizer("adam", learning_rate)
  bs, fbs = batch_size, min(batch_size, len(s.forget))
  retain_pos, forget_pos = np.arange(len(s.retain)), np.arange(len(s.forget))
  per_lane = []
  for seed in s.seeds:
    r = [lanes.epoch_rows(retain_pos, s.retain.ids, batch_size=bs, seed=seed, epoch=e) for e in range(epochs)]
    r_idx, r_mask = np.concatenate([a for a, _ in r]), np.concatenate([b for _, b in r])
    f_parts, e = [], 0
    while sum(len(a) for a, _ in f_parts) < len(r_idx):  # cycle the forget set alongside
      f_parts.append(lanes.epoch_rows(forget_pos, s.forget.ids, batch_size=fbs, seed=seed + 1, epoch=e))
      e += 1
    f_idx = np.concatenate([a for a, _ in f_parts])[:len(r_idx)]
    f_mask = np.concatenate([b for _, b in f_parts])[:len(r_idx)]
    per_lane.append((r_idx, r_mask, f_idx, f_mask))
  retain_s = lanes.stack_lanes([(a, b) for a, b, _, _ in per_lane], bs)
  forget_s = lanes.stack_lanes([(c, d) for _, _, c, d in per_lane], fbs)
  schedule = lanes.Schedule({"retain": retain_s.idx, "forget": forget_s.idx},
                            {"retain": retain_s.mask, "forget": forget_s.mask}, retain_s.active)
  tbl = {"retain": lanes.table(s.retain), "forget": lanes.table(s.forget)}
  out, _ = lanes.run(_difference_loss(s.loss_fn, float(forget_weight), float(retain_weight)), opt, s.params,
                     lanes.init_states(opt, s.params), tbl, schedule, strategy=s.strategy)
  return out


@functools.lru_cache(maxsize=16)
def _vmapped_ssd(loss_fn, alpha: float, dampening: float, batch_size: int, per_example: bool):
  def one(params, forget, full):
    i_f = fisher_diagonal(loss_fn, params, forget, batch_size=batch_size, per_example=per_example)
    i_d = fisher_diagonal(loss_fn, params, full, batch_size=batch_size, per_example=per_example)
    return ssd_dampen(params, i_f, i_d, alpha=alpha, dampening=dampening)

  return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def ssd(s: Stacked, *, alpha_scale: float, dampening: float, batch_size: int, per_example: bool,
        alpha: float | None = None):
  alpha = ssd_alpha(alpha, alpha_scale, n_full=len(s.train), n_forget=len(s.forget))
  fn = _vmapped_ssd(s.loss_fn, float(alpha), float(dampening), int(batch_size), bool(per_example))
  return fn(s.params, lanes.table(s.forget), lanes.table(s.train))


def reset_repair(s: Stacked, *, mask, learning_rate: float, epochs: int, batch_size: int):
  fresh = lanes.init_many(s.init_fn, s.key, range(1000 + s.first, 1000 + s.first + s.n))
  params = reset_params(s.params, fresh, mask)
  return s.fit(params, s.retain, cached_optimizer("adam", learning_rate), epochs=epochs, batch_size=batch_size)
