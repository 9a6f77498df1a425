"""Unlearning cost against retraining from scratch (issue table 2): wall time and gradient work of
every method for forget sets of 1, 10 and 100 random examples and one class, and how cost grows
with the forget-set size and the model size (PNG).

    python benchmarks/cost_vs_retrain.py      # writes benchmarks/results/cost.{json,md,png}

Each job runs once to compile, then ``--reps`` timed runs (median, ``block_until_ready``).
Gradient work is counted in *example-gradients*: examples that go through a backward pass
(a step on a batch of B real examples counts B; SSD's per-example Fisher counts each example once).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import jax
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))
import _common  # noqa: E402

from jaxunlearn import data, losses, methods, models, training  # noqa: E402

EPOCHS, BATCH = 20, 128


def example_gradients(method: str, n_forget: int, n_retain: int) -> int:
  if method == "retrain":
    return EPOCHS * n_retain
  h = methods.get(method).defaults
  if method in ("finetune", "reset_repair"):
    return h["epochs"] * n_retain
  if method == "gradient_ascent":
    return h["epochs"] * n_forget
  if method == "gradient_difference":  # one retain batch and one forget batch per step
    steps = h["epochs"] * math.ceil(n_retain / h["batch_size"])
    return h["epochs"] * n_retain + steps * min(h["batch_size"], n_forget)
  if method == "ssd":
    return n_forget + n_forget + n_retain  # Fisher on the forget set and on the full training set
  return -1  # a method registered later: its gradient work is not modelled here


def timed(fn, reps: int) -> float:
  return _common.interleaved({"fn": lambda: jax.block_until_ready(fn())}, reps)["fn"]


def run_case(train, forget_ids, hidden, reps, seed=0):
  forget, retain = data.split_forget(train, forget_ids)
  apply, p0 = models.create("mlp", train.input_shape, 10, key=jax.random.key(seed), hidden=hidden)
  init = models.init_fn("mlp", train.input_shape, 10, hidden=hidden)
  loss = losses.cross_entropy_loss(apply)
  opt = optax.adam(1e-3)
  original = training.fit(loss, p0, train, optimizer=opt, epochs=EPOCHS, batch_size=BATCH, seed=seed)
  rows = {"retrain": timed(lambda: training.fit(loss, p0, retain, optimizer=opt, epochs=EPOCHS, batch_size=BATCH,
                                                seed=seed), reps)}
  # SCRUB+R's held-out examples: the test set (the forget sets here are random but for one class;
  # the rewinding rule's data does not change its cost).
  context = {"init_fn": init, "apply_fn": apply, "holdout": data.load("digits")[1]}
  for name, method in methods.all_methods().items():
    needs = {k: context[k] for k in method.needs}
    rows[name] = timed(lambda: method(loss, original, forget=forget, retain=retain, seed=seed, **needs), reps)
  return {name: {"seconds": s, "example_gradients": example_gradients(name, len(forget), len(retain))}
          for name, s in rows.items()}, len(forget)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--reps", type=int, default=5)
  args = p.parse_args()
  m = _common.machine()
  train, _ = data.load("digits")
  rng = np.random.default_rng(0)
  sets = {f"random {k}": rng.choice(train.ids, size=k, replace=False) for k in (1, 10, 100)}
  sets["class 3"] = data.class_ids(train, 3)
  by_set = {}
  for label, ids in sets.items():
    by_set[label], _ = run_case(train, ids, (256, 256), args.reps)
    print(label, {k: round(v["seconds"], 4) for k, v in by_set[label].items()}, flush=True)
  by_width = {}
  for width in (64, 256, 1024):
    by_width[width], _ = run_case(train, sets["random 100"], (width, width), args.reps)
    print(width, {k: round(v["seconds"], 4) for k, v in by_width[width].items()}, flush=True)
  methods = list(by_set["random 1"])
  md = ["# Unlearning cost against retraining from scratch", "", _common.machine_line(m), "",
        f"digits, MLP 64-256-256-10, retraining = {EPOCHS} epochs of Adam, batch {BATCH}; every method with its "
        f"`jaxunlearn demo` defaults. Steady-state seconds, median of {args.reps} after a compile run; "
        "in brackets the time as a fraction of retraining. Example-gradients: examples through a backward pass.", "",
        "| method | " + " | ".join(sets) + " | example-gradients (random 100) |",
        "| --- |" + " ---: |" * (len(sets) + 1)]
  for name in methods:
    cells = [f"{by_set[s][name]['seconds']:.3f} ({by_set[s][name]['seconds'] / by_set[s]['retrain']['seconds']:.2f})"
             for s in sets]
    md.append(f"| {name} | " + " | ".join(cells) + f" | {by_set['random 100'][name]['example_gradients']} |")
  md += ["", "Model size (forget 100 random examples, MLP with two hidden layers of the given width):", "",
         "| method | " + " | ".join(f"width {w}" for w in by_width) + " |", "| --- |" + " ---: |" * len(by_width)]
  for name in methods:
    md.append(f"| {name} | " + " | ".join(
        f"{by_width[w][name]['seconds']:.3f} ({by_width[w][name]['seconds'] / by_width[w]['retrain']['seconds']:.2f})"
        for w in by_width) + " |")
  md += ["", "![cost curves](cost.png)", ""]
  _common.write("cost", {"machine": m, "by_forget_set": by_set, "by_width": {str(k): v for k, v in by_width.items()}},
                "\n".join(md))
  plot(by_set, by_width, os.path.join(_common.RESULTS, "cost.png"), m)


def plot(by_set, by_width, path, m):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
  sizes = {"random 1": 1, "random 10": 10, "random 100": 100}
  for name in by_set["random 1"]:
    a.plot(list(sizes.values()), [by_set[s][name]["seconds"] for s in sizes], marker="o", label=name,
           color="crimson" if name == "retrain" else None)
    b.plot(list(by_width), [by_width[w][name]["seconds"] for w in by_width], marker="o", label=name,
           color="crimson" if name == "retrain" else None)
  for ax, xlabel in ((a, "forget-set size (random examples)"), (b, "MLP hidden width (forget 100)")):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("seconds (steady state)")
    ax.grid(alpha=0.3, which="both")
  a.legend(fontsize=8)
  fig.suptitle(f"digits, {m['device']} ({m['backend']}), jax {m['jax']}", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


if __name__ == "__main__":
  main()
