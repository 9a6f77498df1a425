"""The same data-parallel step on 1, 2, 4 and 8 devices (issue table 5).

    python benchmarks/devices.py      # writes benchmarks/results/devices.{json,md}

On a CPU-only machine the devices are simulated (``--xla_force_host_platform_device_count=8``,
set here before jax is imported): all of them share the same cores, so this checks correctness
and measures the partitioning overhead, not scaling. Run it on a multi-GPU host for scaling.
"""

from __future__ import annotations

import os
import sys

if "--real-devices" not in sys.argv:
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import _common  # noqa: E402

import jaxunlearn  # noqa: E402
from jaxunlearn import data, losses, models  # noqa: E402

BATCH, STEPS = 512, 30


def main():
  m = _common.machine()
  m["simulated_devices"] = "--real-devices" not in sys.argv
  train, _ = data.load("mnist1d")
  apply, params = models.create("mlp", train.input_shape, 10, key=jax.random.key(0))
  loss = losses.cross_entropy_loss(apply)
  tx = optax.adam(1e-3)
  n = (len(train) // BATCH) * BATCH
  x, y = train.x[:n], train.y[:n]
  rows, reference = [], None
  for k in (1, 2, 4, 8):
    if k > jax.device_count():
      break
    mesh = Mesh(np.array(jax.devices()[:k]), ("data",))
    shard, repl = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    xs, ys = jax.device_put(jnp.asarray(x), shard), jax.device_put(jnp.asarray(y), shard)
    p = jax.device_put(params, repl)
    s = jax.device_put(tx.init(params), repl)

    @jax.jit
    def step(p, s, xb, yb):
      g = jax.grad(loss)(p, {"x": xb, "y": yb, "mask": jnp.ones(xb.shape[0], jnp.float32)})
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s

    batches = [(xs[i:i + BATCH], ys[i:i + BATCH]) for i in range(0, n, BATCH)]
    t0 = time.perf_counter()
    jax.block_until_ready(step(p, s, *batches[0]))
    compile_s = time.perf_counter() - t0
    times = []
    for t in range(STEPS):
      xb, yb = batches[t % len(batches)]
      t0 = time.perf_counter()
      p, s = jax.block_until_ready(step(p, s, xb, yb))
      times.append(time.perf_counter() - t0)
    fisher_t0 = time.perf_counter()
    fisher = jax.block_until_ready(jaxunlearn.fisher_diagonal(loss, p, {"x": xs, "y": ys}, batch_size=BATCH))
    fisher_s = time.perf_counter() - fisher_t0  # includes compilation
    leaves = [np.asarray(a) for a in jax.tree.leaves((p, fisher))]
    if reference is None:
      reference = leaves
    diff = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30)) for a, b in zip(leaves, reference))
    rows.append({"devices": k, "step_ms": statistics.median(times) * 1e3, "compile_s": compile_s,
                 "examples_per_s": BATCH / statistics.median(times), "max_rel_diff_vs_1": diff,
                 "fisher_s_with_compile": fisher_s})
    print(rows[-1], flush=True)
  md = ["# The same data-parallel step on 1, 2, 4, 8 devices", "", _common.machine_line(m), "",
        ("Simulated CPU devices (all share the same 2 cores): this checks correctness and measures partitioning "
         "overhead; it says nothing about scaling." if m["simulated_devices"] else "Real devices."), "",
        f"MNIST-1D MLP, Adam step on a batch of {BATCH} sharded over the devices (`jit` + `NamedSharding`), "
        f"median of {STEPS} steps; then {STEPS} steps later the parameters and a sharded `fisher_diagonal` are "
        "compared with the 1-device run (largest difference relative to the largest value).", "",
        "| devices | ms per step | examples/s | compile s | max rel. diff vs 1 device |", "| ---: | ---: | ---: | ---: | ---: |"]
  for r in rows:
    md.append(f"| {r['devices']} | {r['step_ms']:.2f} | {r['examples_per_s']:.0f} | {r['compile_s']:.2f} | "
              f"{r['max_rel_diff_vs_1']:.1e} |")
  md.append("")
  _common.write("devices", {"machine": m, "rows": rows}, "\n".join(md))


if __name__ == "__main__":
  main()
