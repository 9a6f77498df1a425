"""SISA: cost of one single-example forget request against full retraining, beside the cost model;
vmapped vs sequential shard training; ensemble vs single-model accuracy.

    python benchmarks/sisa_cost.py            # writes benchmarks/results/sisa.{json,md}

Cost model (Bourtoule et al. 2021): with S shards, R slices and the epoch schedule that gives
stage r the same total work as training on the whole shard, a request for one uniformly drawn
example costs on average (2R+1)/(3R) of one shard's training, so the expected speed-up over
retraining all S shards (as costly as one model on all data) is S * 3R / (2R+1).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import jax
import numpy as np
import optax

sys.path.insert(0, __import__("os").path.dirname(__file__))
import _common  # noqa: E402

from jaxunlearn import data, losses, models, sisa, training  # noqa: E402


_FUNCTIONS: dict = {}


def job(directory, train, model, cfg):
  # One (apply, init, loss) per dataset and model, so that the warm-up run's compiled steps are reused.
  key = (train.name, model)
  if key not in _FUNCTIONS:
    apply, _ = models.create(model, train.input_shape, train.num_classes, key=jax.random.key(0))
    init = models.init_fn(model, train.input_shape, train.num_classes)
    _FUNCTIONS[key] = (apply, init, losses.cross_entropy_loss(apply))
  apply, init, loss = _FUNCTIONS[key]
  return sisa.SISA(directory, train, init_fn=init, apply_fn=apply, loss_fn=loss, optimizer=OPT, config=cfg), apply


OPT = optax.adam(1e-3)


def cost(dataset: str, *, shards: int, slices: int, requests: int, seed: int) -> dict:
  train, test = data.load(dataset)
  cfg = sisa.SisaConfig(shards=shards, slices=slices, epochs=20, batch_size=32, seed=seed, strategy="sequential",
                        dataset=dataset, model="mlp", learning_rate=1e-3)
  with tempfile.TemporaryDirectory() as warm:
    warm_job = job(warm, train, "mlp", cfg)[0]  # compile once, outside the timed runs
    warm_job.train()
    warm_job.forget([int(train.ids[0])])
  full_seconds = []
  for _ in range(2):  # two more full trainings: full retraining time is the median of three
    with tempfile.TemporaryDirectory() as d:
      full_seconds.append(job(d, train, "mlp", cfg)[0].train()["seconds"])
  with tempfile.TemporaryDirectory() as d:
    s, apply = job(d, train, "mlp", cfg)
    full = s.train()
    full["seconds"] = statistics.median(full_seconds + [full["seconds"]])
    rng = np.random.default_rng(seed)
    picks = rng.choice(train.ids, size=requests, replace=False)
    records = [s.forget([int(i)]) for i in picks]
    logits = s.logits(test.x)
    vote = float(np.mean(sisa.aggregate(logits, "vote") == test.y))
    soft = float(np.mean(sisa.aggregate(logits, "softmax") == test.y))
    shard_acc = float(np.mean(logits.argmax(-1) == test.y[None]))
  apply, p0 = models.create("mlp", train.input_shape, train.num_classes, key=jax.random.key(seed))
  single = training.fit(losses.cross_entropy_loss(apply), p0, train, optimizer=OPT, epochs=20, batch_size=32, seed=seed)
  steps = [r["steps"] for r in records]
  seconds = [r["seconds"] for r in records]
  model_speedup = shards * 3 * slices / (2 * slices + 1)
  return {
      "dataset": dataset, "train_size": len(train), "shards": shards, "slices": slices, "requests": requests,
      "full_steps": full["steps"], "full_seconds": full["seconds"],
      "mean_request_steps": statistics.mean(steps), "mean_request_seconds": statistics.mean(seconds),
      "speedup_steps": full["steps"] / statistics.mean(steps),
      "speedup_seconds": full["seconds"] / statistics.mean(seconds),
      "model_speedup": model_speedup,
      "ensemble_vote_acc": vote, "ensemble_softmax_acc": soft, "mean_shard_acc": shard_acc,
      "single_model_acc": training.dataset_accuracy(apply, single, test),
  }


def strategies(dataset: str, model: str, *, shards: int, reps: int) -> dict:
  train, _ = data.load(dataset)
  out = {}
  for strategy in ("sequential", "vmap"):
    cfg = sisa.SisaConfig(shards=shards, slices=4, epochs=8, batch_size=32, strategy=strategy, dataset=dataset,
                          model=model, learning_rate=1e-3)
    times = []
    for rep in range(reps + 1):
      with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        job(d, train, model, cfg)[0].train()
        if rep:  # the first run compiles
          times.append(time.perf_counter() - t0)
    out[strategy] = statistics.median(times)
  return {"dataset": dataset, "model": model, "shards": shards, **out, "vmap_speedup": out["sequential"] / out["vmap"]}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--requests", type=int, default=24, help="single-example forget requests per dataset")
  p.add_argument("--reps", type=int, default=3)
  args = p.parse_args()
  m = _common.machine()
  costs = [cost(ds, shards=8, slices=4, requests=args.requests, seed=0) for ds in ("digits", "mnist1d")]
  strat = [strategies("digits", "mlp", shards=8, reps=args.reps), strategies("digits", "cnn", shards=8, reps=args.reps)]
  md = ["# SISA: forget cost against full retraining", "", _common.machine_line(m), "",
        "One single-example request at a time (ids drawn at random), S=8 shards, R=4 slices, 20 epochs per shard "
        "model, batch 32, MLP, shards trained one after another (the CPU default). Full retraining = training all "
        "S shard models from scratch (median of 3) (the same work as one model on all data). Cost model: S*3R/(2R+1).", "",
        "| dataset | train examples | full retrain steps | mean steps per request | speed-up (steps) | full retrain s | "
        "mean s per request | speed-up (time) | cost model | measured / model (time) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for c in costs:
    md.append(f"| {c['dataset']} | {c['train_size']} | {c['full_steps']} | {c['mean_request_steps']:.1f} | "
              f"{c['speedup_steps']:.2f}x | {c['full_seconds']:.2f} | {c['mean_request_seconds']:.3f} | "
              f"{c['speedup_seconds']:.2f}x | {c['model_speedup']:.2f}x | {c['speedup_seconds'] / c['model_speedup']:.0%} |")
  md += ["", "Ensemble accuracy on the test split (after the requests):", "",
         "| dataset | majority vote | mean softmax | mean single shard model | one model on all data |",
         "| --- | ---: | ---: | ---: | ---: |"]
  for c in costs:
    md.append(f"| {c['dataset']} | {c['ensemble_vote_acc']:.3f} | {c['ensemble_softmax_acc']:.3f} | "
              f"{c['mean_shard_acc']:.3f} | {c['single_model_acc']:.3f} |")
  md += ["", f"Training S=8 shards at once (`vmap`, one program) against one after another, median of {args.reps} "
         "runs after a compile run (8 epochs, 4 slices, batch 32, checkpoints included):", "",
         "| dataset | model | sequential s | vmap s | vmap speed-up |", "| --- | --- | ---: | ---: | ---: |"]
  for r in strat:
    md.append(f"| {r['dataset']} | {r['model']} | {r['sequential']:.2f} | {r['vmap']:.2f} | {r['vmap_speedup']:.2f}x |")
  md.append("")
  _common.write("sisa", {"machine": m, "cost": costs, "strategies": strat}, "\n".join(md))


if __name__ == "__main__":
  main()
