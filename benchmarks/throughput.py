"""Throughput per method on each reference model (issue table 1).

    python benchmarks/throughput.py [--dtype bfloat16]   # writes benchmarks/results/throughput[_bf16].{json,md}

For every method's jitted step: steady-state examples/s (median of ``--reps`` timed calls after a
compile call, ``block_until_ready``), compile seconds apart, FLOPs per example from XLA's cost
analysis (``jit(f).lower(...).compile().cost_analysis()``), achieved FLOP/s and its fraction of
the device's measured peak (a dense matmul microbenchmark in the same dtype, same run), and peak
memory where the backend reports it (``device.memory_stats()``; not on CPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))
import _common  # noqa: E402

import jaxunlearn  # noqa: E402
from jaxunlearn import data, losses, models  # noqa: E402

BATCH = 128


def timed(fn, args, reps):
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times), compile_s, flops


def peak_flops(dtype, reps):
  n = 2048 if jax.default_backend() == "cpu" else 8192
  a = jnp.ones((n, n), dtype)
  seconds, _, _ = timed(lambda a, b: a @ b, (a, a), reps)
  return 2 * n ** 3 / seconds


def reference_models():
  digits, _ = data.load("digits")
  m1d, _ = data.load("mnist1d")
  rng = np.random.default_rng(0)
  cifar_x = rng.normal(size=(BATCH, 32, 32, 3)).astype(np.float32)
  return [("digits MLP", "mlp", digits.x[:BATCH], digits.y[:BATCH]),
          ("MNIST-1D MLP", "mlp", m1d.x[:BATCH], m1d.y[:BATCH]),
          ("MNIST-1D CNN", "cnn", m1d.x[:BATCH], m1d.y[:BATCH]),
          ("CIFAR-size CNN", "cnn", cifar_x, rng.integers(0, 10, BATCH).astype(np.int32))]


def methods(loss, dtype):
  adam = optax.adam(1e-3)
  ascent = optax.chain(jaxunlearn.gradient_ascent(), optax.sgd(1e-2))
  gd = optax.chain(jaxunlearn.gradient_difference(), optax.adam(1e-4))

  def train_step(p, b):
    u, _ = adam.update(jax.grad(loss)(p, b), adam.init(p), p)
    return optax.apply_updates(p, u)

  def ascent_step(p, b):
    u, _ = ascent.update(jax.grad(loss)(p, b), ascent.init(p), p)
    return optax.apply_updates(p, u)

  def graddiff_step(p, b):  # a forget batch and a retain batch (the same examples reversed: XLA must not merge them)
    retain = jax.tree.map(lambda a: a[::-1], b)
    u, _ = gd.update(jax.grad(loss)(p, b), gd.init(p), p, retain_grads=jax.grad(loss)(p, retain))
    return optax.apply_updates(p, u)

  def fisher(p, b):
    return jaxunlearn.fisher_diagonal(loss, p, {"x": b["x"], "y": b["y"]}, batch_size=BATCH)

  def ssd(p, b):
    i = fisher(p, b)
    return jaxunlearn.ssd_dampen(p, i, i, alpha=10.0, dampening=1.0)

  return {"train / finetune step": (train_step, 1), "gradient ascent step": (ascent_step, 1),
          "gradient difference step": (graddiff_step, 2), "per-example Fisher": (fisher, 1),
          "SSD (Fisher + dampen)": (ssd, 1)}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--reps", type=int, default=20)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  args = p.parse_args()
  dtype = jnp.dtype(args.dtype)
  m = _common.machine()
  peak = peak_flops(dtype, args.reps)
  rows = []
  for label, kind, x, y in reference_models():
    apply, params = models.create(kind, x.shape[1:], 10, key=jax.random.key(0), dtype=dtype)
    loss = losses.cross_entropy_loss(apply)
    batch = {"x": jnp.asarray(x, dtype), "y": jnp.asarray(y), "mask": jnp.ones(BATCH, jnp.float32)}
    for name, (fn, batches) in methods(loss, dtype).items():
      seconds, compile_s, flops = timed(fn, (params, batch), args.reps)
      per_s = BATCH * batches / seconds
      mem = jax.devices()[0].memory_stats() or {}
      rows.append({"model": label, "method": name, "examples_per_s": per_s, "compile_s": compile_s,
                   "flops_per_example": flops / (BATCH * batches), "achieved_flops": flops / seconds,
                   "fraction_of_peak": flops / seconds / peak, "peak_bytes": mem.get("peak_bytes_in_use")})
      print(rows[-1], flush=True)
  suffix = "" if args.dtype == "float32" else "_bf16"
  md = [f"# Throughput per method ({args.dtype})", "", _common.machine_line(m), "",
        f"Batch {BATCH}; steady state = median of {args.reps} calls of the compiled step after a warm-up call. "
        f"Measured peak (a {args.dtype} matmul, same run): {peak / 1e9:.1f} GFLOP/s. FLOPs from XLA's cost analysis. "
        "Peak memory: not reported by the CPU backend.", "",
        "| model | method | examples/s | compile s | MFLOP/example | GFLOP/s | of peak | peak memory |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for r in rows:
    mem = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f} MiB"
    md.append(f"| {r['model']} | {r['method']} | {r['examples_per_s']:,.0f} | {r['compile_s']:.2f} | "
              f"{r['flops_per_example'] / 1e6:.2f} | {r['achieved_flops'] / 1e9:.1f} | {r['fraction_of_peak']:.0%} | {mem} |")
  md.append("")
  _common.write(f"throughput{suffix}", {"machine": m, "dtype": args.dtype, "peak_flops": peak, "rows": rows},
                "\n".join(md))


if __name__ == "__main__":
  main()
