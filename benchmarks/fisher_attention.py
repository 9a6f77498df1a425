"""Per-example Fisher of a small attention model (beside table 4): the decomposition on sequence
layers and attention projections against a batch-gradient pass and against ``vmap(grad)``.

    python benchmarks/fisher_attention.py   # writes benchmarks/results/fisher_attention.{json,md}

The model reads an MNIST-1D signal (40 values) as 8 tokens of 5: token embedding, one
``nnx.MultiHeadAttention`` block with a residual and ``nnx.LayerNorm``, a two-layer token MLP,
mean pooling, a classification head. Jobs are timed interleaved (A B C A B C ...), median of
``--reps`` rounds after a warm-up; the decomposed leaves are counted (all of them, the attention projections and LayerNorm scales
included, with the fast path; any leaf left over would cost a whole ``vmap(grad)`` pass).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, os.path.dirname(__file__))
import _common  # noqa: E402

import jaxunlearn  # noqa: E402
from jaxunlearn import data, losses, models  # noqa: E402

BATCH = 64
TOKENS, WIDTH = 8, 5


class AttentionClassifier(nnx.Module):
  def __init__(self, dim: int, heads: int, num_classes: int, *, rngs: nnx.Rngs):
    self.embed = nnx.Linear(WIDTH, dim, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=dim, decode=False, rngs=rngs)
    self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
    self.up = nnx.Linear(dim, 4 * dim, rngs=rngs)
    self.down = nnx.Linear(4 * dim, dim, rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
    self.head = nnx.Linear(dim, num_classes, rngs=rngs)

  def __call__(self, x):
    t = self.embed(x.reshape(x.shape[0], TOKENS, WIDTH))
    t = self.norm1(t + self.attn(t))
    t = self.norm2(t + self.down(nnx.gelu(self.up(t))))
    return self.head(jnp.mean(t, axis=1))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--reps", type=int, default=5)
  args = p.parse_args()
  train, _ = data.load("mnist1d")
  n = (len(train) // BATCH) * BATCH
  full = {"x": jnp.asarray(train.x[:n]), "y": jnp.asarray(train.y[:n])}
  rows = []
  for dim, heads in ((32, 4), (128, 4)):
    apply, params = models.functional(AttentionClassifier(dim, heads, 10, rngs=nnx.Rngs(0)))
    loss = losses.cross_entropy_loss(apply)
    leaves = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    chunk = jax.tree.map(lambda a: a[:BATCH], full)
    decomposed = jaxunlearn.fisher_fast_path_leaves(loss, params, chunk)
    jobs = {
        "batch-gradient pass": lambda: jax.block_until_ready(
            jaxunlearn.fisher_diagonal(loss, params, full, batch_size=BATCH, per_example=False)),
        "fisher (decompose)": lambda: jax.block_until_ready(
            jaxunlearn.fisher_diagonal(loss, params, full, batch_size=BATCH)),
        "fisher (vmap)": lambda: jax.block_until_ready(
            jaxunlearn.fisher_diagonal(loss, params, full, batch_size=BATCH, method="vmap")),
    }
    # The two Fisher results are compared; their calls are also the warm-up (compilation).
    check = [jobs["fisher (decompose)"](), jobs["fisher (vmap)"]()]
    top = max(float(jnp.max(a)) for a in jax.tree.leaves(check[1]))
    agree = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(*map(jax.tree.leaves, check))) / top
    jobs["batch-gradient pass"]()
    med = _common.interleaved(jobs, args.reps, warm_up=False)
    rows.append({"dim": dim, "heads": heads, "params": sum(a.size for a in jax.tree.leaves(params)),
                 "leaves": len(leaves), "decomposed": decomposed, "max_diff_vs_vmap_rel_to_max": agree,
                 "seconds": med})
    print(rows[-1], flush=True)
  m = _common.machine()
  md = ["# Per-example Fisher of a small attention model", "", _common.machine_line(m), "",
        f"MNIST-1D, {n} examples as {TOKENS} tokens of {WIDTH}; embedding, multi-head self-attention, LayerNorm, "
        f"token MLP (GELU), LayerNorm, mean pooling, head. Chunks of {BATCH}; interleaved, median of {args.reps} "
        "rounds after a warm-up (milliseconds). Max difference: the largest absolute difference between the "
        "two Fisher methods over the largest entry.", "",
        "| width | heads | parameters | leaves decomposed | batch-gradient pass | fisher, decompose | / batch pass | "
        "fisher, vmap(grad) | / batch pass | max difference |", "|" + " ---: |" * 10]
  for r in rows:
    s = {k: v * 1e3 for k, v in r["seconds"].items()}
    b, d, v = s["batch-gradient pass"], s["fisher (decompose)"], s["fisher (vmap)"]
    md.append(f"| {r['dim']} | {r['heads']} | {r['params']:,} | {len(r['decomposed'])} of {r['leaves']} | {b:.1f} | "
              f"{d:.1f} | {d / b:.2f}x | {v:.1f} | {v / b:.1f}x | {r['max_diff_vs_vmap_rel_to_max']:.1e} |")
  md.append("")
  _common.write("fisher_attention", {"machine": m, "rows": rows}, "\n".join(md))


if __name__ == "__main__":
  main()
