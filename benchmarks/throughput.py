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


def flops_of(fn, args) -> float:
  """FLOPs of ``fn`` by XLA's cost analysis (a loop body counts once there: see ``step_flops``)."""
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


PER_EXAMPLE = ("per-example Fisher", "SSD (Fisher + dampen)")


def step_flops(one_pass, name, params, state, batch) -> float:
  """FLOPs of one step. The per-example Fisher loops over examples (on CPU one at a time) and XLA
  counts a loop body once, so it is counted on one example, where there is no loop, and scaled by
  the batch; SSD adds its dampening (per parameter, counted once). The sum of the squared
  per-example gradients over the batch is left out of the count: a lower bound."""
  if name not in PER_EXAMPLE:
    return flops_of(one_pass[name][0], (params, state, batch))
  one = jax.tree.map(lambda a: a[:1], batch)
  fisher_one = flops_of(one_pass["per-example Fisher"][0], (params, state, one))
  return BATCH * fisher_one + flops_of(one_pass[name][0], (params, state, one)) - fisher_one


def timed(fn, args, reps):
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  return _common.interleaved({"step": lambda: jax.block_until_ready(compiled(*args))}, reps)["step"], compile_s


def peak_flops(dtype, reps):
  n = 2048 if jax.default_backend() == "cpu" else 8192
  a = jnp.ones((n, n), dtype)
  seconds, _ = timed(lambda a, b: a @ b, (a, a), reps)
  return 2 * n ** 3 / seconds


def reference_models():
  """(label, kind, x, y, micro-batch): the CIFAR-size CNN runs its gradients in micro-batches of 16
  (``jaxunlearn.microbatch_value_and_grad``), the formulation that is fastest for it on CPU
  (``vs_torch.py`` measures both); on an accelerator pass ``--no-micro-batch``."""
  digits, _ = data.load("digits")
  m1d, _ = data.load("mnist1d")
  rng = np.random.default_rng(0)
  cifar_x = rng.normal(size=(BATCH, 32, 32, 3)).astype(np.float32)
  return [("digits MLP", "mlp", digits.x[:BATCH], digits.y[:BATCH], None),
          ("MNIST-1D MLP", "mlp", m1d.x[:BATCH], m1d.y[:BATCH], None),
          ("MNIST-1D CNN", "cnn", m1d.x[:BATCH], m1d.y[:BATCH], None),
          ("CIFAR-size CNN", "cnn", cifar_x, rng.integers(0, 10, BATCH).astype(np.int32), 16)]


def methods(loss, micro):
  """name -> (step(params, opt_state, batch), batches per step, optimizer or None).

  The optimizer state is an argument (initialised once, outside the timed call), as in a training
  loop. With ``micro`` set, gradients run in micro-batches and the per-example Fisher in chunks of
  ``micro`` examples.
  """
  grad = jax.grad(loss) if micro is None else (lambda p, b: jaxunlearn.microbatch_value_and_grad(loss, micro)(p, b)[1])
  chunk = BATCH if micro is None else micro
  adam = optax.adam(1e-3)
  ascent = optax.chain(jaxunlearn.gradient_ascent(), optax.sgd(1e-2))
  gd = optax.chain(jaxunlearn.gradient_difference(), optax.adam(1e-4))

  def train_step(p, s, b):
    u, s = adam.update(grad(p, b), s, p)
    return optax.apply_updates(p, u), s

  def ascent_step(p, s, b):
    u, s = ascent.update(grad(p, b), s, p)
    return optax.apply_updates(p, u), s

  def graddiff_step(p, s, b):  # a forget batch and a retain batch (the same examples reversed: XLA must not merge them)
    retain = jax.tree.map(lambda a: a[::-1], b)
    u, s = gd.update(grad(p, b), s, p, retain_grads=grad(p, retain))
    return optax.apply_updates(p, u), s

  def fisher(p, s, b):
    return jaxunlearn.fisher_diagonal(loss, p, {"x": b["x"], "y": b["y"]}, batch_size=chunk)

  def ssd(p, s, b):
    i = fisher(p, s, b)
    return jaxunlearn.ssd_dampen(p, i, i, alpha=10.0, dampening=1.0)

  return {"train / finetune step": (train_step, 1, adam), "gradient ascent step": (ascent_step, 1, ascent),
          "gradient difference step": (graddiff_step, 2, gd), "per-example Fisher": (fisher, 1, None),
          "SSD (Fisher + dampen)": (ssd, 1, None)}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--reps", type=int, default=20)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--no-micro-batch", action="store_true", help="one pass per batch for every model")
  args = p.parse_args()
  dtype = jnp.dtype(args.dtype)
  m = _common.machine()
  peak = peak_flops(dtype, args.reps)
  rows = []
  for label, kind, x, y, micro in reference_models():
    micro = None if args.no_micro_batch else micro
    apply, params = models.create(kind, x.shape[1:], 10, key=jax.random.key(0), dtype=dtype)
    loss = losses.cross_entropy_loss(apply)
    batch = {"x": jnp.asarray(x, dtype), "y": jnp.asarray(y), "mask": jnp.ones(BATCH, jnp.float32)}
    one_pass = methods(loss, None)
    for name, (fn, batches, opt) in methods(loss, micro).items():
      state = opt.init(params) if opt is not None else None
      seconds, compile_s = timed(fn, (params, state, batch), args.reps)
      # FLOPs come from the one-pass form of the step (see step_flops).
      flops = step_flops(one_pass, name, params, state, batch)
      per_s = BATCH * batches / seconds
      mem = jax.devices()[0].memory_stats() or {}
      rows.append({"model": label, "method": name, "micro_batch": micro, "examples_per_s": per_s, "compile_s": compile_s,
                   "flops_per_example": flops / (BATCH * batches), "achieved_flops": flops / seconds,
                   "fraction_of_peak": flops / seconds / peak, "peak_bytes": mem.get("peak_bytes_in_use")})
      print(rows[-1], flush=True)
  suffix = "" if args.dtype == "float32" else "_bf16"
  mem_note = ("Peak memory: not reported by this backend." if all(r["peak_bytes"] is None for r in rows)
              else "Peak memory: the device's `peak_bytes_in_use` after the step.")
  md = [f"# Throughput per method ({args.dtype})", "", _common.machine_line(m), "",
        f"Batch {BATCH}; steady state = median of {args.reps} calls of the compiled step after a warm-up call. "
        f"Measured peak (a {args.dtype} matmul, same run): {peak / 1e9:.1f} GFLOP/s. FLOPs from XLA's cost analysis. "
        f"{mem_note} The optimizer state is initialised outside the timed step. "
        "Micro-batch: gradients computed that many examples at a time (`microbatch_value_and_grad`; the "
        "per-example Fisher in chunks of that size); FLOPs are those of the one-pass step, with the Fisher's "
        "per-example loop counted as one batched product (XLA counts a loop body once).", "",
        "| model | method | micro-batch | examples/s | compile s | MFLOP/example | GFLOP/s | of peak | peak memory |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for r in rows:
    mem = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f} MiB"
    md.append(f"| {r['model']} | {r['method']} | {r['micro_batch'] or '-'} | {r['examples_per_s']:,.0f} | {r['compile_s']:.2f} | "
              f"{r['flops_per_example'] / 1e6:.2f} | {r['achieved_flops'] / 1e9:.1f} | {r['fraction_of_peak']:.0%} | {mem} |")
  md.append("")
  _common.write(f"throughput{suffix}", {"machine": m, "dtype": args.dtype, "peak_flops": peak, "rows": rows},
                "\n".join(md))


if __name__ == "__main__":
  main()
