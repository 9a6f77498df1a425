"""Side by side with PyTorch (issue tables 3 and 4): per-example Fisher, SSD and gradient
difference on the same architectures, data and batch sizes, timed interleaved in one run.

    pip install ".[bench]"            # torch==2.13.0, the CPU wheel
    python benchmarks/vs_torch.py     # writes benchmarks/results/vs_torch.{json,md}

Every job runs once to warm up (JAX compiles), then ``--reps`` rounds in which each job runs once,
in a fixed order (A B C ... A B C ...); each job's time is its median over the rounds.

The CIFAR-size CNN's JAX jobs compute every minibatch gradient in micro-batches of 16 examples
(``jaxunlearn.microbatch_value_and_grad``: the same minibatch gradient, computed while the
activations stay in cache) and its per-example Fisher in chunks of 16; the one-pass JAX timings are
reported beside them. PyTorch runs its plain code: micro-batching does not speed it up (measured).
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
import torch

sys.path.insert(0, os.path.dirname(__file__))
import _common  # noqa: E402
from baselines import torch_unlearning as tu  # noqa: E402

import jaxunlearn  # noqa: E402
from jaxunlearn import data, losses, models  # noqa: E402

BATCH = 64
STEPS = 20


def reference_models():
  digits, _ = data.load("digits")
  m1d, _ = data.load("mnist1d")
  rng = np.random.default_rng(0)
  cifar = (rng.normal(size=(512, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 512).astype(np.int32))
  return [  # (label, kind, x, y, micro-batch of the JAX side)
      ("digits MLP", "mlp", digits.x, digits.y, None),
      ("MNIST-1D MLP", "mlp", m1d.x, m1d.y, None),
      ("MNIST-1D CNN", "cnn", m1d.x, m1d.y, None),
      ("CIFAR-size CNN (random inputs)", "cnn", *cifar, 16),
  ]


def jax_jobs(loss, params, full, forget, n, n_forget, micro):
  """The JAX side's timed jobs; ``micro``: gradients in micro-batches of that size (None: one pass)."""
  chunk = micro or BATCH
  grad = jax.grad(loss) if micro is None else (lambda p, b: jaxunlearn.microbatch_value_and_grad(loss, micro)(p, b)[1])

  @jax.jit
  def batch_pass(p, d):
    chunks = jax.tree.map(lambda a: a.reshape((-1, BATCH) + a.shape[1:]), d)
    body = lambda acc, c: (jax.tree.map(jnp.add, acc, grad(p, c)), None)  # noqa: E731
    return jax.lax.scan(body, jax.tree.map(jnp.zeros_like, p), chunks)[0]

  def ssd():  # the original SSD definition: squared minibatch gradients, minibatches of BATCH
    i_f = jaxunlearn.fisher_diagonal(loss, params, forget, batch_size=BATCH, per_example=False, micro_batch=micro)
    i_d = jaxunlearn.fisher_diagonal(loss, params, full, batch_size=BATCH, per_example=False, micro_batch=micro)
    return jax.block_until_ready(jaxunlearn.ssd_dampen(params, i_f, i_d, alpha=10.0, dampening=1.0))

  tx = optax.chain(jaxunlearn.gradient_difference(forget_weight=1.0, retain_weight=1.0), optax.adam(1e-4))

  @jax.jit
  def gd_step(p, s, forget_batch, retain_batch):
    updates, s = tx.update(grad(p, forget_batch), s, p, retain_grads=grad(p, retain_batch))
    return optax.apply_updates(p, updates), s

  retain_batches = [jax.tree.map(lambda a: a[(t * BATCH) % n:(t * BATCH) % n + BATCH], full) for t in range(STEPS)]
  forget_batches = [jax.tree.map(lambda a: a[(t * BATCH) % n_forget:(t * BATCH) % n_forget + BATCH], forget)
                    for t in range(STEPS)]
  mask = jnp.ones(BATCH, jnp.float32)
  state0 = tx.init(params)

  def graddiff():
    p, s = params, state0
    for f, r in zip(forget_batches, retain_batches):
      p, s = gd_step(p, s, {**f, "mask": mask}, {**r, "mask": mask})
    return jax.block_until_ready(p)

  return {
      "batch-gradient pass": lambda: jax.block_until_ready(batch_pass(params, full)),
      "fisher (decompose)": lambda: jax.block_until_ready(jaxunlearn.fisher_diagonal(loss, params, full, batch_size=chunk)),
      "fisher (vmap)": lambda: jax.block_until_ready(
          jaxunlearn.fisher_diagonal(loss, params, full, batch_size=chunk, method="vmap")),
      "ssd (per-batch, original definition)": ssd,
      f"graddiff {STEPS} steps": graddiff,
  }


def bench_model(label, kind, x, y, micro, reps):
  n = (len(x) // BATCH) * BATCH
  x, y = x[:n], y[:n]
  shape = x.shape[1:]
  apply, params = models.create(kind, shape, 10, key=jax.random.key(0))
  loss = losses.cross_entropy_loss(apply)
  full = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
  n_forget = (n // 10 // BATCH) * BATCH or BATCH
  forget = {"x": full["x"][:n_forget], "y": full["y"][:n_forget]}
  jax_side = {f"jax {k}": v for k, v in jax_jobs(loss, params, full, forget, n, n_forget, micro).items()}
  if micro is not None:
    one_pass = jax_jobs(loss, params, full, forget, n, n_forget, None)
    for k in ("batch-gradient pass", "ssd (per-batch, original definition)", f"graddiff {STEPS} steps"):
      jax_side[f"jax one-pass {k}"] = one_pass[k]
  steps = STEPS

  torch.manual_seed(0)
  tmodel = tu.MLP(int(np.prod(shape)), 10) if kind == "mlp" else tu.CNN(shape, 10)
  tx_, ty_ = tu.to_torch(x), torch.from_numpy(np.asarray(y, np.int64))
  tf_, tyf = tx_[:n_forget], ty_[:n_forget]
  state = {k: v.clone() for k, v in tmodel.state_dict().items()}

  def torch_ssd():
    tmodel.load_state_dict(state)
    tu.ssd(tmodel, (tf_, tyf), (tx_, ty_), alpha=10.0, dampening=1.0, batch_size=BATCH)

  def torch_graddiff():
    tmodel.load_state_dict(state)
    tu.graddiff_steps(tmodel, torch.optim.Adam(tmodel.parameters(), 1e-4), (tf_, tyf), (tx_, ty_), steps=steps,
                      batch_size=BATCH)

  jobs = {
      **jax_side,
      "torch batch-gradient pass": lambda: tu.batch_gradient_pass(tmodel, tx_, ty_, BATCH),
      "torch.func fisher": lambda: tu.per_example_fisher(tmodel, tx_, ty_, BATCH),
      "torch ssd (original code)": torch_ssd,
      f"torch graddiff {STEPS} steps": torch_graddiff,
  }
  t0 = time.perf_counter()
  times = _common.interleaved(jobs, reps)
  print(f"{label}: {time.perf_counter() - t0:.0f} s", {k: round(v * 1e3, 1) for k, v in times.items()}, flush=True)
  return {"model": label, "examples": n, "batch_size": BATCH, "micro_batch": micro, "seconds": times}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--only", default=None, help="run only the models whose label contains this text")
  args = p.parse_args()
  m = _common.machine()
  m["torch"] = torch.__version__
  m["torch_threads"] = torch.get_num_threads()
  rows = [bench_model(*spec, args.reps) for spec in reference_models() if not args.only or args.only in spec[0]]
  md = ["# jaxunlearn against PyTorch", "", _common.machine_line(m) + f" PyTorch {m['torch']} "
        f"({m['torch_threads']} threads).", "",
        f"Same architecture, data and batch size ({BATCH}); jobs timed interleaved, median of {args.reps} rounds "
        "after a warm-up (milliseconds). Ratios above 1 mean jaxunlearn is faster. Micro-batch: the JAX side "
        "computes each minibatch gradient that many examples at a time (`microbatch_value_and_grad`; same "
        "minibatches and numbers) and the per-example Fisher in chunks of that size; PyTorch runs its plain code.", "",
        "## Per-example Fisher diagonal (table 4)", "",
        "| model | examples | micro-batch | JAX batch-gradient pass | fisher, decompose | / batch pass | "
        "fisher, vmap(grad) | / batch pass | torch.func | torch.func / decompose |", "| --- |" + " ---: |" * 9]
  for r in rows:
    s = {k: v * 1e3 for k, v in r["seconds"].items()}
    b, d, v, tf = s["jax batch-gradient pass"], s["jax fisher (decompose)"], s["jax fisher (vmap)"], s["torch.func fisher"]
    md.append(f"| {r['model']} | {r['examples']} | {r['micro_batch'] or '-'} | {b:.1f} | {d:.1f} | {d / b:.2f}x | "
              f"{v:.1f} | {v / b:.1f}x | {tf:.1f} | {tf / d:.2f}x |")
  md += ["", "## Methods (table 3)", "",
         f"| model | micro-batch | SSD jax | SSD torch (original code) | torch / jax | graddiff {STEPS} steps jax | torch | "
         "torch / jax | batch pass jax | torch | torch / jax |", "| --- |" + " ---: |" * 10]
  for r in rows:
    s = {k: v * 1e3 for k, v in r["seconds"].items()}
    a, b = s["jax ssd (per-batch, original definition)"], s["torch ssd (original code)"]
    c, d = s[f"jax graddiff {STEPS} steps"], s[f"torch graddiff {STEPS} steps"]
    e, f = s["jax batch-gradient pass"], s["torch batch-gradient pass"]
    md.append(f"| {r['model']} | {r['micro_batch'] or '-'} | {a:.1f} | {b:.1f} | {b / a:.2f}x | {c:.1f} | {d:.1f} | "
              f"{d / c:.2f}x | {e:.1f} | {f:.1f} | {f / e:.2f}x |")
  micro_rows = [r for r in rows if r["micro_batch"]]
  if micro_rows:
    md += ["", "## JAX one pass per minibatch against micro-batches", "",
           "| model | micro-batch | job | one pass | micro-batched | speed-up | torch |", "| --- |" + " ---: |" * 6]
    for r in micro_rows:
      s = {k: v * 1e3 for k, v in r["seconds"].items()}
      for job, torch_job in (("batch-gradient pass", "torch batch-gradient pass"),
                             ("ssd (per-batch, original definition)", "torch ssd (original code)"),
                             (f"graddiff {STEPS} steps", f"torch graddiff {STEPS} steps")):
        one, mb = s[f"jax one-pass {job}"], s[f"jax {job}"]
        md.append(f"| {r['model']} | {r['micro_batch']} | {job} | {one:.1f} | {mb:.1f} | {one / mb:.2f}x | "
                  f"{s[torch_job]:.1f} |")
  md.append("")
  _common.write("vs_torch", {"machine": m, "rows": rows}, "\n".join(md))


if __name__ == "__main__":
  main()
