"""Certified removal (``jaxunlearn.certified``): removal time against retraining, and test accuracy
and retraining frequency against the guarantee (epsilon) and the noise (sigma).

    python benchmarks/certified.py            # writes benchmarks/results/certified.{json,md,png}

Two feature sets, each a linear head on fixed features, as the guarantee requires:
- digits: the 64 raw pixels (1,437 train / 360 test);
- MNIST-1D: the 128-unit penultimate layer of the reference CNN trained on a *public* half of the
  4,000 training signals (seed 0); the certified head is trained on the other, private half
  (2,000), whose removals the guarantee covers. (Features from a network trained on the removed
  data itself would not be covered.)

For each (sigma, epsilon), lambda = 1e-3, delta = 1e-4: train, then remove 100 random ids one by
one. Reported: test accuracy before and after, retrains among the 100 removals, the median Newton
removal time (steady state: the first removal, which compiles, is reported apart) and the time of
one retrain from scratch (steady state, median of 3). "noise-free" is the same model with
sigma = 1e-6: the accuracy certified removal gives up.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))
import _common  # noqa: E402

from jaxunlearn import certified, data, losses, models, training  # noqa: E402

SIGMAS = (0.1, 1.0, 10.0)
EPSILONS = (0.1, 1.0, 10.0)
LAMS = (1e-3, 1e-2)
DELTA = 1e-4


def digits_features():
  train, test = data.load("digits")
  return ("digits (64 raw pixels)", train.x.reshape(len(train), -1), train.y, train.ids,
          test.x.reshape(len(test), -1), test.y)


def mnist1d_features():
  train, test = data.load("mnist1d")
  rng = np.random.default_rng(0)
  public = np.zeros(len(train), bool)
  public[rng.permutation(len(train))[: len(train) // 2]] = True
  pub = data.Dataset(x=train.x[public], y=train.y[public], ids=train.ids[public], num_classes=train.num_classes,
                     name="mnist1d-public")
  apply, params = models.create("cnn", train.input_shape, train.num_classes, key=jax.random.key(0))
  params = training.fit(losses.cross_entropy_loss(apply), params, pub, optimizer=optax.adam(1e-3), epochs=40,
                        batch_size=128, seed=0)
  net_acc = training.dataset_accuracy(apply, params, test)
  # The head's input (ReLU of the dense layer): the same network with an identity head.
  width = params["head"]["kernel"].shape[0]
  identity = {**params, "head": {"kernel": jnp.eye(width), "bias": jnp.zeros(width)}}
  features = lambda x: training.predict(apply, identity, x).astype(np.float64)  # noqa: E731
  private = ~public
  name = (f"MNIST-1D ({width}-unit penultimate layer of the reference CNN trained on the public half; the CNN's "
          f"own test accuracy {net_acc:.3f})")
  return (name, features(train.x[private]), train.y[private], train.ids[private], features(test.x), test.y)


def run_one(name, x, y, ids, xt, yt, lam, sigma, epsilon, removals, seed=0):
  model = certified.fit(x, y, ids, lam=lam, sigma=sigma, epsilon=epsilon, delta=DELTA, seed=seed)
  acc0 = model.accuracy(xt, yt)
  rng = np.random.default_rng(seed)
  order = rng.permutation(ids)[:removals]
  newton, retrain, first = [], [], None
  for i, victim in enumerate(order):
    out = model.remove([int(victim)])
    if i == 0:
      first = out.seconds
      continue
    (newton if out.kind == "newton" else retrain).append(out.seconds)
  return {"dataset": name, "lam": lam, "sigma": sigma, "epsilon": epsilon, "budget": model.budget, "acc_before": acc0,
          "acc_after": model.accuracy(xt, yt), "retrains": model.retrains, "removals": removals,
          "newton_ms_median": float(np.median(newton) * 1e3) if newton else None,
          "retrain_in_removal_s_median": float(np.median(retrain)) if retrain else None,
          "first_removal_s": first, "spent_end": model.spent}


def retrain_seconds(x, y, ids, reps=3):
  """(ours, scikit-learn's): one fit from scratch, steady state, median of ``reps``. scikit-learn:
  one-vs-rest L-BFGS logistic regression on the same prepared features, C = 1 / (lambda n) (the
  same regulariser, no perturbation), tolerance 1e-8."""
  from sklearn.linear_model import LogisticRegression
  from sklearn.multiclass import OneVsRestClassifier

  certified.fit(x, y, ids, lam=LAMS[0], sigma=1.0)  # compile
  xp = certified.prepare_features(x)
  sk = lambda: OneVsRestClassifier(LogisticRegression(C=1.0 / (LAMS[0] * len(x)), tol=1e-8, max_iter=10_000,  # noqa: E731
                                                      fit_intercept=False)).fit(xp, y)
  out = []
  for fn in (lambda: certified.fit(x, y, ids, lam=LAMS[0], sigma=1.0), sk):
    times = []
    for _ in range(reps):
      t0 = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t0)
    out.append(float(np.median(times)))
  return tuple(out)


def plot(rows, path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = list(dict.fromkeys(r["dataset"] for r in rows))
  fig, axes = plt.subplots(1, 2 * len(names), figsize=(5.2 * 2 * len(names), 4.2))
  for j, name in enumerate(names):
    sub = [r for r in rows if r["dataset"] == name]
    ax_a, ax_r = axes[2 * j], axes[2 * j + 1]
    for li, lam in enumerate(LAMS):
      for si, sigma in enumerate(SIGMAS):
        pts = sorted((r["epsilon"], r["acc_after"], r["retrains"]) for r in sub
                     if r["sigma"] == sigma and r["lam"] == lam)
        style = dict(color=f"C{si}", ls="-" if li == 0 else ":", marker="o" if li == 0 else "s")
        for ax, col in ((ax_a, 1), (ax_r, 2)):
          ax.plot([p[0] for p in pts], [p[col] for p in pts], label=f"lambda {lam:g}, sigma {sigma:g}", **style)
      free = [r for r in sub if r["sigma"] == 1e-6 and r["lam"] == lam]
      if free:
        ax_a.axhline(free[0]["acc_before"], color="k", ls="--" if li == 0 else ":", lw=0.8,
                     label=f"noise-free, lambda {lam:g}")
    for ax in (ax_a, ax_r):
      ax.set_xscale("log")
      ax.set_xlabel("epsilon (delta = 1e-4)")
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8)
    ax_a.set_ylabel("test accuracy after 100 removals")
    ax_r.set_ylabel("retrains among 100 removals")
    ax_a.set_title(name, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--removals", type=int, default=100)
  args = ap.parse_args()
  rows, retrain_s = [], {}
  for feats in (digits_features(), mnist1d_features()):
    name, x, y, ids, xt, yt = feats[:6]
    retrain_s[name] = retrain_seconds(x, y, ids)
    for lam in LAMS:
      for sigma in SIGMAS:
        for epsilon in EPSILONS:
          rows.append(run_one(name, x, y, ids, xt, yt, lam, sigma, epsilon, args.removals))
          print(rows[-1], flush=True)
      rows.append(run_one(name, x, y, ids, xt, yt, lam, 1e-6, 1.0, 10))  # accuracy without noise (guarantee void)
  m = _common.machine()
  lines = ["# Certified removal (`benchmarks/certified.py`)", "", _common.machine_line(m), "",
           f"delta = {DELTA:g}; {args.removals} single-id removals in a random order per row "
           "(one run, seed 0). Newton time: median steady-state removal (the first, compiling, removal apart). "
           "Retrain: one fit from scratch on the same data, steady state, median of 3. See the script's docstring "
           "for the features.", ""]
  for name in retrain_s:
    sub = [r for r in rows if r["dataset"] == name and r["sigma"] != 1e-6]
    free = {r["lam"]: r["acc_before"] for r in rows if r["dataset"] == name and r["sigma"] == 1e-6}
    newton = [r["newton_ms_median"] for r in sub if r["newton_ms_median"] is not None]
    lines += [f"## {name}", "",
              f"Retrain from scratch (lambda = {LAMS[0]:g}): {retrain_s[name][0]:.3f} s with our float64 Newton "
              f"solver, {retrain_s[name][1]:.3f} s with scikit-learn's L-BFGS (one-vs-rest, same regulariser). "
              f"Median Newton removal: {np.median(newton):.1f} ms, "
              f"{retrain_s[name][0] / (np.median(newton) / 1e3):.0f}x faster than our retrain and "
              f"{retrain_s[name][1] / (np.median(newton) / 1e3):.0f}x faster than scikit-learn's. Noise-free accuracy (sigma = 1e-6, no guarantee): "
              + ", ".join(f"{v:.4f} at lambda = {k:g}" for k, v in free.items()) + ".", "",
              "| lambda | sigma | epsilon | budget | test acc. before | after 100 removals | retrains / 100 | Newton ms | "
              "first removal s (compiles) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sub:
      nt = "-" if r["newton_ms_median"] is None else f"{r['newton_ms_median']:.1f}"
      lines.append(f"| {r['lam']:g} | {r['sigma']:g} | {r['epsilon']:g} | {r['budget']:.3g} | {r['acc_before']:.4f} | "
                   f"{r['acc_after']:.4f} | {r['retrains']} | {nt} | {r['first_removal_s']:.2f} |")
    lines.append("")
  lines += ["![accuracy and retrains against epsilon](certified.png)", ""]
  plot(rows, os.path.join(_common.RESULTS, "certified.png"))
  _common.write("certified", {"machine": m, "rows": rows, "retrain_s": retrain_s}, "\n".join(lines))


if __name__ == "__main__":
  main()
