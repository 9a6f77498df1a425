"""The NeurIPS 2023 unlearning score with N models per method, trained together (``jaxunlearn score``).

N original models (seeds 0..N-1 of initialisation and shuffling) are trained in one compiled
program (``lanes``), N retrained models likewise on the retain set, and each method unlearns all
N originals at once, with the same defaults as ``jaxunlearn demo`` (``demo.HYPER``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import jax
import numpy as np
import optax

from jaxunlearn._src import lanes, metrics
from jaxunlearn._src.ascent import gradient_ascent
from jaxunlearn._src.demo import HYPER, METHODS, prepare
from jaxunlearn._src.importance import fisher_diagonal
from jaxunlearn._src.reset import reset_params
from jaxunlearn._src.ssd import ssd_dampen


@functools.lru_cache(maxsize=16)
def _difference_loss(loss_fn, forget_weight: float, retain_weight: float):
  # Gradient difference as one loss over a {"forget", "retain"} batch pair: its gradient is
  # retain_weight * g_retain - forget_weight * g_forget, what ``gradient_difference`` forms.
  def loss(params, batch):
    return retain_weight * loss_fn(params, batch["retain"]) - forget_weight * loss_fn(params, batch["forget"])

  return loss


@functools.lru_cache(maxsize=16)
def _vmapped_ssd(loss_fn, alpha: float, dampening: float, batch_size: int):
  def one(params, forget, full):
    i_f = fisher_diagonal(loss_fn, params, forget, batch_size=batch_size)
    i_d = fisher_diagonal(loss_fn, params, full, batch_size=batch_size)
    return ssd_dampen(params, i_f, i_d, alpha=alpha, dampening=dampening)

  return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


class _Job:
  """What every lane method needs: the loss, the data, N stacked originals and per-lane seeds."""

  def __init__(self, loss, init, original, train, forget, retain, seeds, batch_size, strategy, key):
    self.loss, self.init, self.original = loss, init, original
    self.train, self.forget, self.retain = train, forget, retain
    self.seeds, self.batch_size, self.strategy, self.key = seeds, batch_size, strategy, key
    self.n = len(seeds)

  def fit(self, params, ds, optimizer, *, epochs, batch_size=None, loss=None):
    bs = batch_size or self.batch_size
    schedule = lanes.epochs_schedule(ds, lanes=self.n, epochs=epochs, batch_size=bs, seeds=self.seeds)
    out, _ = lanes.run(loss or self.loss, optimizer, params, lanes.init_states(optimizer, params),
                       lanes.table(ds), schedule, strategy=self.strategy)
    return out


def _finetune(j: _Job):
  h = HYPER["finetune"]
  return j.fit(j.original, j.retain, optax.adam(h["learning_rate"]), epochs=h["epochs"])


def _gradient_ascent(j: _Job):
  h = HYPER["gradient_ascent"]
  tx = optax.chain(gradient_ascent(), optax.sgd(h["learning_rate"]))
  return j.fit(j.original, j.forget, tx, epochs=h["epochs"], batch_size=h["batch_size"])


def _gradient_difference(j: _Job):
  h = HYPER["gradient_difference"]
  opt = optax.adam(h["learning_rate"])
  bs, fbs = j.batch_size, min(j.batch_size, len(j.forget))
  retain_pos, forget_pos = np.arange(len(j.retain)), np.arange(len(j.forget))
  per_lane = []
  for seed in j.seeds:
    r = [lanes.epoch_rows(retain_pos, j.retain.ids, batch_size=bs, seed=seed, epoch=e) for e in range(h["epochs"])]
    r_idx, r_mask = np.concatenate([a for a, _ in r]), np.concatenate([b for _, b in r])
    f_parts, e = [], 0
    while sum(len(a) for a, _ in f_parts) < len(r_idx):  # cycle the forget set alongside
      f_parts.append(lanes.epoch_rows(forget_pos, j.forget.ids, batch_size=fbs, seed=seed + 1, epoch=e))
      e += 1
    f_idx = np.concatenate([a for a, _ in f_parts])[:len(r_idx)]
    f_mask = np.concatenate([b for _, b in f_parts])[:len(r_idx)]
    per_lane.append((r_idx, r_mask, f_idx, f_mask))
  retain_s = lanes.stack_lanes([(a, b) for a, b, _, _ in per_lane], bs)
  forget_s = lanes.stack_lanes([(c, d) for _, _, c, d in per_lane], fbs)
  schedule = lanes.Schedule({"retain": retain_s.idx, "forget": forget_s.idx},
                            {"retain": retain_s.mask, "forget": forget_s.mask}, retain_s.active)
  tbl = {"retain": lanes.table(j.retain), "forget": lanes.table(j.forget)}
  out, _ = lanes.run(_difference_loss(j.loss, 1.0, 1.0), opt, j.original, lanes.init_states(opt, j.original),
                     tbl, schedule, strategy=j.strategy)
  return out


def _ssd(j: _Job):
  h = HYPER["ssd"]
  fn = _vmapped_ssd(j.loss, h["alpha"], h["dampening"], h["batch_size"])
  return fn(j.original, lanes.table(j.forget), lanes.table(j.train))


def _reset_repair(j: _Job):
  h = HYPER["reset_repair"]
  fresh = lanes.init_many(j.init, j.key, range(1000, 1000 + j.n))
  params = reset_params(j.original, fresh, h["mask"])
  return j.fit(params, j.retain, optax.adam(h["learning_rate"]), epochs=h["epochs"])


LANE_METHODS: dict[str, Callable[[_Job], object]] = {
    "finetune": _finetune,
    "gradient_ascent": _gradient_ascent,
    "gradient_difference": _gradient_difference,
    "ssd": _ssd,
    "reset_repair": _reset_repair,
}
assert set(LANE_METHODS) == set(METHODS), "every demo method needs an N-model version"


def run(
    *,
    dataset: str = "digits",
    forget: str = "random:0.1",
    methods: list[str] | None = None,
    n_models: int = 32,
    model: str = "mlp",
    seed: int = 0,
    epochs: int = 20,
    batch_size: int = 128,
    strategy: str = "vmap",
    data_dir: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
  """Trains N originals and N retrained models, unlearns with each method, returns the report.

  Report keys: ``original``, ``retrain`` (reference accuracies) and ``methods.<name>`` with
  ``forget_quality``, ``score`` (``metrics.neurips_score``), mean ``forget_acc``/``retain_acc``/
  ``test_acc`` over the N models, ``epsilon`` (per forget example) and ``seconds`` (all N models).
  ``original`` is scored too: the models before unlearning, what doing nothing earns.
  """
  methods = list(METHODS) if methods is None else methods
  if n_models < 4:
    raise ValueError(f"the NeurIPS score needs several models per method; got --models {n_models} (use >= 4, 32+ for stable numbers).")
  train, test, forget_ds, retain_ds, apply, _, init, loss = prepare(
      dataset=dataset, forget=forget, model=model, seed=seed, data_dir=data_dir
  )
  key = jax.random.key(seed)
  seeds = [seed * 100_003 + m for m in range(n_models)]
  optimizer = optax.adam(1e-3)

  def train_many(ds, salt):
    params = lanes.init_many(init, key, range(salt * n_models, (salt + 1) * n_models))
    schedule = lanes.epochs_schedule(ds, lanes=n_models, epochs=epochs, batch_size=batch_size,
                                     seeds=[s + salt for s in seeds])
    t0 = time.perf_counter()
    out, _ = lanes.run(loss, optimizer, params, lanes.init_states(optimizer, params), lanes.table(ds),
                       schedule, strategy=strategy)
    return jax.block_until_ready(out), time.perf_counter() - t0

  log(f"training {n_models} original models on {len(train)} examples ({strategy})")
  original, original_s = train_many(train, 0)
  log(f"training {n_models} retrained models without the {len(forget_ds)} forget examples")
  retrained, retrain_s = train_many(retain_ds, 1)

  def evaluate(params):
    row = {}
    for name, ds in (("forget", forget_ds), ("retain", retain_ds), ("test", test)):
      logits = lanes.predict(apply, params, ds.x)
      row[f"{name}_acc"] = float(np.mean(np.argmax(logits, -1) == ds.y[None]))
      if name == "forget":
        confs = np.stack([metrics.logit_scaled_confidence(z, ds.y) for z in logits])
    return row, confs

  ref, ref_confs = evaluate(retrained)
  ref["seconds"] = retrain_s
  report = {
      "dataset": dataset, "model": model, "forget": forget, "forget_size": int(len(forget_ds)),
      "models": n_models, "seed": seed, "strategy": strategy, "backend": jax.default_backend(),
      "retrain": ref, "methods": {},
  }

  def scored(params, seconds):
    row, confs = evaluate(params)
    fq, eps = metrics.forget_quality(confs, ref_confs)
    row.update(
        forget_quality=fq,
        score=metrics.neurips_score(fq, retain_acc=row["retain_acc"], test_acc=row["test_acc"],
                                    retrain_retain_acc=ref["retain_acc"], retrain_test_acc=ref["test_acc"]),
        epsilon=[float(e) for e in eps],
        seconds=seconds,
    )
    return row

  report["original"] = scored(original, original_s)
  job = _Job(loss, init, original, train, forget_ds, retain_ds, seeds, batch_size, strategy,
             jax.random.fold_in(key, 7))
  for name in methods:
    log(f"{name}: {METHODS[name][0]} (x{n_models})")
    t0 = time.perf_counter()
    params = jax.block_until_ready(LANE_METHODS[name](job))
    report["methods"][name] = scored(params, time.perf_counter() - t0)
  return report


def histogram(eps, *, edges=(0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, metrics.EPSILON_CAP)) -> list[tuple[str, int]]:
  """Counts of per-example epsilons in bins ``[edges[i], edges[i+1])``, the last one closed
  (epsilons are capped at ``metrics.EPSILON_CAP``)."""
  counts = np.histogram(np.asarray(eps, float), bins=np.asarray(edges, float))[0]
  labels = [f"[{lo:g},{hi:g}{']' if i == len(edges) - 2 else ')'}" for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]
  return list(zip(labels, [int(c) for c in counts]))
