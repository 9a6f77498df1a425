"""Language-model unlearning steps against plain PyTorch: tokens per second of GradDiff, NPO and
RMU on the same decoder, data, batch and sequence length, interleaved in one run.

    pip install ".[bench]"              # torch==2.13.0, the CPU wheel
    python benchmarks/lm_vs_torch.py    # writes benchmarks/results/lm_vs_torch.{json,md}

The JAX side is the public recipe (``jaxunlearn.lm.recipes.*``) called as a user calls it, for
``--steps`` minibatches: host batches in, the parameters out, NPO's reference log-probabilities
computed inside the call. Its first call compiles; the timed calls reuse the compiled step (the
recipes' optimizer and step are cached per setting). The PyTorch side
(``baselines/torch_lm.py``) is the same decoder loaded from the same parameters (the logits are
checked to agree) and the same losses, on the same minibatches (the recipes' forget/retain pairing
reproduced here), with ``torch.optim.AdamW``; NPO is timed twice there, with the reference
forward inside every step as open-unlearning does, and with it precomputed as the JAX recipe does.

Every job runs once to warm up, then ``--reps`` rounds of every job in a fixed order; each job's
time is its median. Tokens are the non-padding tokens through the model's forward and backward
passes (counted as the recipes count them, the same for both sides); model FLOPs come from XLA's
cost analysis of the JAX step, and utilisation is against this machine's f32 matmul peak measured
in the same run (``x @ y``, n = 2048, both frameworks; the larger of the two).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import _common  # noqa: E402
from baselines import torch_lm  # noqa: E402

from jaxunlearn.lm import data, losses, models, recipes  # noqa: E402

CONFIGS = {  # label -> decoder sizes
    "small (d 128, 2 layers: the benchmark's model)": models.DecoderConfig(),
    "large (d 256, 4 layers, d_ff 768)": models.DecoderConfig(d_model=256, n_layers=4, n_heads=8, d_ff=768,
                                                              hidden_layer=2),
}
BATCH, LENGTH = 32, 128


def batches(steps: int):
  """Forget and retain QA of the generated world, ``steps`` forget minibatches' worth."""
  world = data.generate(data.WorldConfig.preset("small"))
  fq = world.qa(world.forget_authors("forget10"))
  rq = world.qa(world.retain_authors("forget10"))
  fq = (fq * (-(-steps * BATCH // len(fq))))[: steps * BATCH]
  forget = data.qa_batch([q.question for q in fq], [q.answer for q in fq], length=LENGTH)
  retain = data.qa_batch([q.question for q in rq], [q.answer for q in rq], length=LENGTH)
  return forget, retain


def pairing(forget, retain, *, seed: int = 0):
  """The recipes' schedule for one epoch: shuffled forget minibatches, each with a random retain one."""
  rng = np.random.default_rng(seed)
  for fb in data.epoch_batches(forget, batch_size=BATCH, seed=seed, epoch=0):
    yield fb, {k: v[rng.integers(0, len(retain["input_ids"]), size=BATCH)] for k, v in retain.items()}


def matmul_peak() -> dict:
  n = 2048
  x = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
  mm = jax.jit(lambda a, b: a @ b)
  tx = torch.tensor(np.asarray(x))
  out = _common.interleaved({"jax": lambda: mm(x, x).block_until_ready(), "torch": lambda: tx @ tx}, 5)
  return {k: 2 * n ** 3 / v / 1e9 for k, v in out.items()}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=8, help="minibatches per timed call")
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--configs", default="all", help="comma-separated prefixes of the config labels, or all")
  args = p.parse_args()
  torch.set_num_threads(os.cpu_count() or 1)
  m = _common.machine()
  m["torch"], m["torch_threads"] = torch.__version__, torch.get_num_threads()
  peak = matmul_peak()
  forget, retain = batches(args.steps)
  results = {}
  for label, cfg in CONFIGS.items():
    if args.configs != "all" and not any(label.startswith(c) for c in args.configs.split(",")):
      continue
    results[label] = run_config(cfg, forget, retain, reps=args.reps)
    print(label, {k: round(v["tokens_per_s"]) for k, v in results[label]["jobs"].items()}, flush=True)
  payload = {"machine": m, "matmul_peak_gflops": peak, "batch": BATCH, "length": LENGTH, "steps": args.steps,
             "reps": args.reps, "results": results}
  _common.write("lm_vs_torch", payload, render(payload))


def run_config(cfg: models.DecoderConfig, forget, retain, *, reps: int) -> dict:
  lm = models.create(cfg, seed=0)
  params = lm.params
  tp = torch_lm.from_jax(params)
  tmodel = torch_lm.Decoder(tp, n_layers=cfg.n_layers, n_heads=cfg.n_heads, rope_base=cfg.rope_base)
  ids = forget["input_ids"][:4]
  gap = float(np.max(np.abs(np.asarray(lm.logits_fn(params, jnp.asarray(ids)))
                            - tmodel.logits(torch.tensor(ids, dtype=torch.long)).detach().numpy())))
  assert gap < 1e-3, f"the PyTorch decoder does not compute the JAX decoder's logits (max gap {gap})"
  pairs = list(pairing(forget, retain))
  tpairs = [tuple({k: torch.tensor(v, dtype=torch.long) for k, v in b.items()} for b in pair) for pair in pairs]
  lr, wd, beta, rw, steering, alpha = 1e-5, 0.01, 0.1, 1.0, 2.0, 1.0
  trainable = f"blocks/[0-{cfg.hidden_layer}]/mlp/down"
  tokens = {}

  def jax_job(name, fn):
    def job():
      stats = {}
      out = fn(stats)
      jax.block_until_ready(out)
      tokens[name] = stats["tokens"]
    return job

  kw = dict(forget=forget, retain=retain, epochs=1, batch_size=BATCH, learning_rate=lr, weight_decay=wd)
  jobs = {
      "jax graddiff": jax_job("graddiff", lambda s: recipes.gradient_difference(
          lm, params, retain_weight=rw, stats=s, **kw)),
      "jax npo": jax_job("npo", lambda s: recipes.npo(lm, params, beta=beta, stats=s, **kw)),
      "jax rmu": jax_job("rmu", lambda s: recipes.rmu(lm, params, steering=steering, alpha=alpha,
                                                       trainable=trainable, stats=s, **{**kw, "weight_decay": 0.0})),
  }
  layer = cfg.hidden_layer
  control = torch_lm.control_vector(cfg.d_model, steering, seed=0)
  selected = {f"blocks/{i}/mlp/down" for i in range(layer + 1)}

  def torch_job(kind, precomputed=False):
    def job():
      p = torch_lm.copy_params(tp, selected if kind == "rmu" else None)
      model = torch_lm.Decoder(p, n_layers=cfg.n_layers, n_heads=cfg.n_heads, rope_base=cfg.rope_base)
      opt = torch_lm.adamw(p, lr, 0.0 if kind == "rmu" else wd)
      ref_nll = None
      if precomputed:  # once for the whole forget set, as the JAX recipe does
        with torch.no_grad():
          ref_nll = [torch_lm.sequence_nll(tmodel.logits(fb["input_ids"]), fb["labels"]) for fb, _ in tpairs]
      for i, (fb, rb) in enumerate(tpairs):
        if kind == "graddiff":
          torch_lm.gradient_difference_step(model, opt, fb, rb, retain_weight=rw)
        elif kind == "npo":
          torch_lm.npo_step(model, tmodel, opt, fb, rb, beta=beta, ref_nll=None if ref_nll is None else ref_nll[i])
        else:
          torch_lm.rmu_step(model, tmodel, opt, fb, rb, control=control, layer=layer, alpha=alpha)
    return job

  jobs.update({"torch graddiff": torch_job("graddiff"), "torch npo": torch_job("npo"),
               "torch npo (reference cached)": torch_job("npo", precomputed=True), "torch rmu": torch_job("rmu")})
  t0 = time.perf_counter()
  first = {}
  for name, fn in jobs.items():  # warm-up: the JAX jobs compile here
    s = time.perf_counter()
    fn()
    first[name] = time.perf_counter() - s
  times = _common.interleaved(jobs, reps, warm_up=False)
  flops = step_flops(lm, params, forget, retain)
  passes = forward_backward(lm, params, tmodel, tp, cfg, forget, reps=max(reps, 5))
  out = {"parameters": int(sum(x.size for x in jax.tree.leaves(params))), "logits_gap": gap, "passes": passes,
         "seconds_total": time.perf_counter() - t0, "jobs": {}}
  for name, seconds in times.items():
    method = name.split()[1]
    tok = tokens[method]
    out["jobs"][name] = {"seconds": seconds, "first_call_seconds": first[name], "tokens": tok,
                         "tokens_per_s": tok / seconds, "gflops_per_s": flops[method] * len(pairs) / seconds / 1e9}
  return out


def forward_backward(lm, params, tmodel, tp, cfg, forget, *, reps: int) -> dict:
  """Where the time goes: milliseconds of the forget NLL's forward pass alone and of forward +
  backward (the gradient of every parameter), one minibatch, each framework, interleaved."""
  fb = {k: jnp.asarray(v[:BATCH]) for k, v in forget.items()}
  loss = lambda p: losses.nll(lm.logits_fn(p, fb["input_ids"]), fb["labels"])  # noqa: E731
  fwd, grad = jax.jit(loss), jax.jit(jax.grad(loss))
  ids, labels = torch.tensor(forget["input_ids"][:BATCH], dtype=torch.long), torch.tensor(forget["labels"][:BATCH],
                                                                                          dtype=torch.long)
  trainable = torch_lm.copy_params(tp)
  model = torch_lm.Decoder(trainable, n_layers=cfg.n_layers, n_heads=cfg.n_heads, rope_base=cfg.rope_base)

  def torch_forward():
    with torch.no_grad():
      torch_lm.mean_nll(tmodel.logits(ids), labels)

  def torch_grad():
    for v in trainable.values():
      v.grad = None
    torch_lm.mean_nll(model.logits(ids), labels).backward()

  times = _common.interleaved({"jax forward": lambda: jax.block_until_ready(fwd(params)),
                               "jax forward+backward": lambda: jax.block_until_ready(grad(params)),
                               "torch forward": torch_forward, "torch forward+backward": torch_grad}, reps)
  return {k: 1000 * v for k, v in times.items()}


def step_flops(lm, params, forget, retain) -> dict:
  """XLA's FLOP count of one step's forward and backward passes for each method (its losses' math;
  the optimizer's element-wise update is left out, as it is negligible beside the matmuls)."""
  fb = {k: jnp.asarray(v[:BATCH]) for k, v in forget.items()}
  rb = {k: jnp.asarray(v[:BATCH]) for k, v in retain.items()}

  def cost(fn, *a):
    return float(jax.jit(fn).lower(*a).compile().cost_analysis()["flops"])

  nll = lambda p, b: losses.nll(lm.logits_fn(p, b["input_ids"]), b["labels"])  # noqa: E731
  graddiff = cost(lambda p: jax.grad(lambda q: nll(q, rb) - nll(q, fb))(p), params)
  npo = cost(lambda p: jax.grad(lambda q: losses.sequence_nll(lm.logits_fn(q, fb["input_ids"]), fb["labels"]).mean()
                                + nll(q, rb))(p), params)
  # RMU trains the selected down-projections only: gradients for those (PyTorch computes no others).
  layer = lm.config.hidden_layer

  def with_down(p, downs):
    blocks = {**p["blocks"], **{i: {**p["blocks"][i], "mlp": {**p["blocks"][i]["mlp"], "down": d}}
                                for i, d in downs.items()}}
    return {**p, "blocks": blocks}

  def rmu_loss(downs, p):
    q = with_down(p, downs)
    return (jnp.mean(lm.hidden_fn(q, fb["input_ids"]) ** 2)
            + jnp.mean((lm.hidden_fn(q, rb["input_ids"]) - jax.lax.stop_gradient(lm.hidden_fn(p, rb["input_ids"]))) ** 2))

  downs = {i: params["blocks"][i]["mlp"]["down"] for i in range(layer + 1)}
  rmu = cost(lambda d, p: jax.grad(rmu_loss)(d, p), downs, params)
  return {"graddiff": graddiff, "npo": npo, "rmu": rmu}


def render(payload: dict) -> str:
  peak = max(payload["matmul_peak_gflops"].values())
  lines = ["# Language-model unlearning steps: JAX (jaxunlearn) against plain PyTorch", "",
           _common.machine_line(payload["machine"]) + f" PyTorch {payload['machine']['torch']}, "
           f"{payload['machine']['torch_threads']} threads.", "",
           "`python benchmarks/lm_vs_torch.py`: the same decoder (loaded from the same parameters; the logits agree to "
           "the gap shown), the same losses and minibatches; batch "
           f"{payload['batch']}, sequence length {payload['length']}, {payload['steps']} minibatches per call, median "
           f"of {payload['reps']} interleaved rounds. Matmul peak (f32, n = 2048): JAX "
           f"{payload['matmul_peak_gflops']['jax']:.0f}, PyTorch {payload['matmul_peak_gflops']['torch']:.0f} GFLOP/s; "
           "utilisation is against the larger.", ""]
  for label, r in payload["results"].items():
    jobs = r["jobs"]
    lines += [f"## {label}: {r['parameters']:,} parameters (logits gap {r['logits_gap']:.1e})", "",
              "| method | JAX tokens/s | PyTorch tokens/s | JAX / PyTorch | JAX MFU | PyTorch MFU | JAX first call s |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for method, torch_names in (("graddiff", ["torch graddiff"]), ("npo", ["torch npo", "torch npo (reference cached)"]),
                                ("rmu", ["torch rmu"])):
      j = jobs[f"jax {method}"]
      for tn in torch_names:
        t = jobs[tn]
        name = {"graddiff": "GradDiff", "npo": "NPO", "rmu": "RMU"}[method]
        if "cached" in tn:
          name += " (PyTorch's reference forward precomputed too)"
        elif method == "npo":
          name += " (PyTorch's reference forward in every step, as open-unlearning)"
        lines.append(f"| {name} | {j['tokens_per_s']:,.0f} | {t['tokens_per_s']:,.0f} | "
                     f"{j['tokens_per_s'] / t['tokens_per_s']:.2f}x | {j['gflops_per_s'] / peak:.1%} | "
                     f"{t['gflops_per_s'] / peak:.1%} | {j['first_call_seconds']:.1f} |")
    ms = r["passes"]
    lines += ["", f"Where the time goes (one minibatch of the forget NLL, ms): forward JAX {ms['jax forward']:.1f}, "
              f"PyTorch {ms['torch forward']:.1f}; forward + backward JAX {ms['jax forward+backward']:.1f}, PyTorch "
              f"{ms['torch forward+backward']:.1f} (backward / forward: JAX "
              f"{ms['jax forward+backward'] / ms['jax forward'] - 1:.1f}x, PyTorch "
              f"{ms['torch forward+backward'] / ms['torch forward'] - 1:.1f}x).", ""]
  lines += ["Tokens: non-padding tokens through forward and backward passes per second of a whole call (the JAX "
            "recipe's host-to-device transfers and, for NPO, its reference pass included). MFU: XLA's FLOP count of "
            "the step times the steps, per second, over the matmul peak; the same count serves the PyTorch side (the "
            "same math). JAX first call: the warm-up call, compilation included.", ""]
  return "\n".join(lines)


if __name__ == "__main__":
  main()
