"""Exact kNN forgetting: query throughput and single-id forget latency of
``jaxunlearn.KNNClassifier`` against scikit-learn's brute-force ``KNeighborsClassifier``, same
data, same k, one run.

    python benchmarks/knn.py                     # writes benchmarks/results/knn.{json,md}
    python benchmarks/knn.py --rows 100000       # a quicker look

Random embeddings (standard normal, float32), 10 random labels. Query time: the median of
``--reps`` calls after one warm-up call (compilation, reported apart), each blocking on its
result. Forget: removing one id; for scikit-learn, whose brute-force index has no deletion, the
forget is a refit on the remaining rows (a copy of them, what "rebuild" costs there).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import _common  # noqa: E402

import jaxunlearn as ju  # noqa: E402


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--rows", type=int, default=1_000_000)
  ap.add_argument("--dim", type=int, default=128)
  ap.add_argument("--queries", type=int, default=1000)
  ap.add_argument("--k", type=int, default=5)
  ap.add_argument("--reps", type=int, default=3)
  args = ap.parse_args()
  from sklearn.neighbors import KNeighborsClassifier

  rng = np.random.default_rng(0)
  x = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
  y = rng.integers(0, 10, args.rows)
  ids = np.arange(args.rows)
  q = rng.standard_normal((args.queries, args.dim), dtype=np.float32)

  t0 = time.perf_counter()
  knn = ju.KNNClassifier(x, y, ids, k=args.k)
  build = time.perf_counter() - t0
  t0 = time.perf_counter()
  ours = knn.predict(q)
  first = time.perf_counter() - t0
  jax_query = _common.median_time(lambda: knn.predict(q), args.reps)
  forget = []
  for i in range(6):
    t0 = time.perf_counter()
    knn.forget([int(ids[i])])
    knn._valid.block_until_ready()
    forget.append(time.perf_counter() - t0)

  t0 = time.perf_counter()
  sk = KNeighborsClassifier(n_neighbors=args.k, algorithm="brute").fit(x, y)
  sk_fit = time.perf_counter() - t0
  theirs = sk.predict(q)
  sk_query = _common.median_time(lambda: sk.predict(q), args.reps)
  keep = np.ones(args.rows, bool)
  keep[:6] = False
  t0 = time.perf_counter()
  KNeighborsClassifier(n_neighbors=args.k, algorithm="brute").fit(x[keep], y[keep])
  sk_forget = time.perf_counter() - t0
  agree = float(np.mean(ours == theirs))  # before the forgets (ours) vs the full index (theirs)

  m = _common.machine()
  payload = {"machine": m, "args": vars(args), "jax": {"build_s": build, "first_query_s": first,
             "query_s": jax_query, "forget_ms": [f * 1e3 for f in forget]},
             "sklearn": {"fit_s": sk_fit, "query_s": sk_query, "refit_without_6_s": sk_forget},
             "label_agreement": agree}
  md = "\n".join([
      "# Exact kNN forgetting against scikit-learn (`benchmarks/knn.py`)", "", _common.machine_line(m), "",
      f"{args.rows:,} x {args.dim} random float32 embeddings, {args.queries:,} queries, k = {args.k}, "
      f"median of {args.reps}.", "",
      "| | jaxunlearn.KNNClassifier | scikit-learn KNeighborsClassifier (brute) |", "|---|---|---|",
      f"| build / fit | {build:.2f} s | {sk_fit:.2f} s |",
      f"| {args.queries:,} queries | {jax_query:.2f} s ({args.queries / jax_query:,.0f} queries/s; first call "
      f"{first:.2f} s, compilation included) | {sk_query:.2f} s ({args.queries / sk_query:,.0f} queries/s) |",
      f"| forget one id | {np.median(forget[1:]) * 1e3:.2f} ms (median of 5 after the first, {forget[0] * 1e3:.0f} ms "
      f"with compilation; exact: the row is overwritten in place and masked) | {sk_forget:.2f} s (refit on the "
      "remaining rows: no deletion) |",
      f"| predicted labels equal | {agree:.3f} of the queries | |", "",
      f"Queries per second, JAX / scikit-learn: {sk_query / jax_query:.2f}x.", ""])
  _common.write("knn", payload, md)


if __name__ == "__main__":
  main()
