"""The NeurIPS 2023 unlearning score with N models per method, trained together (``jaxunlearn score``).

N original models (seeds 0..N-1 of initialisation and shuffling) are trained in one compiled
program (``lanes``), N retrained models likewise on the retain set, and each method unlearns all
N originals at once (each registry method's N-models version), with the same defaults as
``jaxunlearn demo`` (the method registry's).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import numpy as np
import optax

from jaxunlearn._src import distributed, lanes, neurips
from jaxunlearn._src import methods as methods_lib
from jaxunlearn._src.demo import holdout_for, prepare
from jaxunlearn._src.lane_recipes import Stacked


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
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
  """Trains N originals and N retrained models, unlearns with each method, returns the report.

  Report keys: ``original``, ``retrain`` (reference accuracies) and ``methods.<name>`` with
  ``forget_quality``, ``score`` (``neurips.neurips_score``), mean ``forget_acc``/``retain_acc``/
  ``test_acc`` over the N models, ``epsilon`` (per forget example) and ``seconds`` (all N models).
  ``original`` is scored too: the models before unlearning, what doing nothing earns (the floor).
  ``retrain_ceiling`` is a second, independent set of N retrained models (other seeds of
  initialisation and shuffling) scored against the first: what an exact unlearning method earns,
  limited only by training noise. Each method's ``gap_share`` is its share of the way from floor to
  ceiling (``gap_share``).
  ``log(message)`` says what starts; ``progress(stage, done, total)`` counts the stages (the two
  trainings of N models and one per method) as they end.

  In several processes (``jax.distributed``; every process makes the call) the N models are split
  evenly: process ``p`` trains, unlearns and evaluates its slice of them on its own devices, the
  per-model results are gathered, and every process returns the same report, equal to the
  one-process report (with the same devices per process: bit for bit, as each model's program is
  the same). ``seconds`` are the slowest process's.
  """
  methods = methods_lib.names() if methods is None else methods
  stages = 3 + len(methods)
  tick = (lambda stage, done: None) if progress is None else (lambda stage, done: progress(stage, done, stages))
  if n_models < 4:
    raise ValueError(f"the NeurIPS score needs several models per method; got --models {n_models} (use >= 4, 32+ for stable numbers).")
  train, test, forget_ds, retain_ds, apply, _, init, loss = prepare(
      dataset=dataset, forget=forget, model=model, seed=seed, data_dir=data_dir
  )
  procs = jax.process_count()
  if n_models % procs:
    raise ValueError(f"--models {n_models} does not split evenly over {procs} processes.")
  per = n_models // procs
  first = jax.process_index() * per  # this process's models: first .. first + per - 1
  key = jax.random.key(seed)
  seeds = [seed * 100_003 + m for m in range(first, first + per)]
  optimizer = optax.adam(1e-3)

  def train_many(ds, salt):
    params = lanes.init_many(init, key, range(salt * n_models + first, salt * n_models + first + per))
    schedule = lanes.epochs_schedule(ds, lanes=per, epochs=epochs, batch_size=batch_size,
                                     seeds=[s + salt for s in seeds])
    t0 = time.perf_counter()
    out, _ = lanes.run(loss, optimizer, params, lanes.init_states(optimizer, params), lanes.table(ds),
                       schedule, strategy=strategy)
    return jax.block_until_ready(out), _slowest(time.perf_counter() - t0)

  log(f"training {n_models} original models on {len(train)} examples ({strategy})")
  original, original_s = train_many(train, 0)
  tick("originals", 1)
  log(f"training {n_models} retrained models without the {len(forget_ds)} forget examples")
  retrained, retrain_s = train_many(retain_ds, 1)
  tick("retrained", 2)
  log(f"training {n_models} more retrained models (other seeds): the retrain ceiling")
  ceiling, ceiling_s = train_many(retain_ds, 2)
  tick("retrain ceiling", 3)

  def evaluate(params):
    local = {}
    for name, ds in (("forget", forget_ds), ("retain", retain_ds), ("test", test)):
      logits = lanes.predict_stacked(apply, params, ds.x)
      local[name] = np.sum(np.argmax(logits, -1) == ds.y[None], axis=1)  # correct per model
      if name == "forget":
        local["confs"] = np.stack([neurips.logit_scaled_confidence(z, ds.y) for z in logits])
    every = _gather_models(local)  # all N models, in model order
    row = {f"{name}_acc": float(np.sum(every[name]) / (n_models * len(ds)))
           for name, ds in (("forget", forget_ds), ("retain", retain_ds), ("test", test))}
    return row, every["confs"]

  ref, ref_confs = evaluate(retrained)
  ref["seconds"] = retrain_s
  report = {
      "dataset": dataset, "model": model, "forget": forget, "forget_size": int(len(forget_ds)),
      "models": n_models, "seed": seed, "strategy": strategy, "backend": jax.default_backend(), "processes": procs,
      "retrain": ref, "methods": {},
  }

  def scored(params, seconds):
    row, confs = evaluate(params)
    fq, eps = neurips.forget_quality(confs, ref_confs)
    row.update(
        forget_quality=fq,
        score=neurips.neurips_score(fq, retain_acc=row["retain_acc"], test_acc=row["test_acc"],
                                    retrain_retain_acc=ref["retain_acc"], retrain_test_acc=ref["test_acc"]),
        epsilon=[float(e) for e in eps],
        seconds=seconds,
    )
    return row

  report["original"] = scored(original, original_s)
  report["retrain_ceiling"] = scored(ceiling, ceiling_s)
  floor, top = report["original"]["score"], report["retrain_ceiling"]["score"]
  for row in (report["original"], report["retrain_ceiling"]):
    row["gap_share"] = gap_share(row["score"], floor, top)
  stacked = Stacked(loss, init, original, train, forget_ds, retain_ds, seeds, strategy, jax.random.fold_in(key, 7),
                    apply_fn=apply, holdout=holdout_for(forget_ds, test, by_class=forget.startswith("class:")), first=first)
  for done, name in enumerate(methods, start=4):
    method = methods_lib.get(name)
    log(f"{name}: {method.describe()} (x{n_models})")
    t0 = time.perf_counter()
    params = jax.block_until_ready(method.many(stacked))
    row = report["methods"][name] = scored(params, _slowest(time.perf_counter() - t0))
    row["gap_share"] = gap_share(row["score"], floor, top)
    tick(name, done)
  return report


def _gather_models(local: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Per-model arrays (leading axis: this process's models) of every process, concatenated in
  process order (= model order)."""
  parts = distributed.allgather_arrays(local)
  return {k: np.concatenate([p[k] for p in parts]) for k in local}


def _slowest(seconds: float) -> float:
  return float(_gather_models({"s": np.array([seconds])})["s"].max())


def gap_share(score: float, floor: float, ceiling: float) -> float | None:
  """How much of the way from the untouched original's score (``floor``) to the retrain ceiling's
  a method's ``score`` goes: 0 = no better than doing nothing, 1 = as good as an independent
  retrain (it may be below 0 or above 1); ``None`` when the ceiling is not above the floor."""
  return None if ceiling <= floor else float((score - floor) / (ceiling - floor))


def histogram(eps, *, edges=(0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, neurips.EPSILON_CAP)) -> list[tuple[str, int]]:
  """Counts of per-example epsilons in bins ``[edges[i], edges[i+1])``, the last one closed
  (epsilons are capped at ``neurips.EPSILON_CAP``)."""
  counts = np.histogram(np.asarray(eps, float), bins=np.asarray(edges, float))[0]
  labels = [f"[{lo:g},{hi:g}{']' if i == len(edges) - 2 else ')'}" for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]
  return list(zip(labels, [int(c) for c in counts]))
