"""``jaxunlearn lm demo``: the TOFU-like benchmark end to end on the generated world.

Builds (or reuses from the cache directory) the pretrained, target and retain models, unlearns
the split's forget authors from the target with every registered language-model method, and
reports forget quality, model utility, forget truth ratio, forget ROUGE-L, privleak, extraction
strength, seconds and tokens per second of each, beside the target and the retain model.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import jax

from jaxunlearn._src import lm_data, lm_eval, lm_models, lm_train, lm_world
from jaxunlearn._src import methods as methods_lib

KEYS = ("forget_quality", "model_utility", "forget_truth_ratio", "forget_rouge", "privleak", "extraction_strength",
        "seconds", "tokens_per_s")


# world size -> (model, training, method overrides): "tiny" is a smoke test of the whole job.
SIZES = {
    "tiny": (lm_models.DecoderConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, hidden_layer=0),
             lm_train.TrainConfig(pretrain_epochs=2, finetune_epochs=2), {"epochs": 1}),
    "small": (lm_models.DecoderConfig(), lm_train.TrainConfig(), {}),
    "large": (lm_models.DecoderConfig(d_model=256, n_layers=4, n_heads=8, d_ff=768, hidden_layer=2),
              lm_train.TrainConfig(pretrain_epochs=30, finetune_epochs=10, learning_rate=1e-3), {}),
}


def default_cache_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "jaxunlearn", "lm")


def run(*, split: str = "forget10", methods: list[str] | None = None, world: str = "small", seed: int = 0,
        cache_dir: str | None = None, model: lm_models.DecoderConfig | None = None,
        train: lm_train.TrainConfig | None = None, hyper: dict[str, dict] | None = None,
        relearn: bool = False, log: Callable[[str], None] = lambda _: None,
        progress: Callable[[str, int, int], None] | None = None) -> dict:
  """Runs the benchmark; returns ``{"target": {...}, "retain": {...}, "methods": {NAME: {...}}}``
  (each with ``KEYS`` and the detailed numbers) plus the run's settings. ``hyper`` overrides a
  method's defaults (``{"gradient_ascent": {"epochs": 5}}``). ``relearn``: also run the relearning
  attack on every model (``relearn_steps``: fine-tuning steps on half the forget facts until the
  other half's ROUGE-L is back at 0.9x the target's; ``None``: not within 40 steps)."""
  methods = methods_lib.names(task="lm") if methods is None else methods
  w = lm_world.generate(lm_world.WorldConfig.preset(world, seed))
  size_model, size_train, size_hyper = SIZES[world]
  model = model or size_model
  train = train or dataclasses.replace(size_train, seed=seed)
  if split not in lm_world.SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {lm_world.SPLITS}.")
  models = lm_train.build(w, split=split, model=model, train=train, cache_dir=cache_dir, progress=progress, log=log)
  lm = models.lm

  def evaluating(what: str):
    return None if progress is None else (lambda done, total: progress(f"evaluating {what}", done, total))

  log("evaluating the target and the retain model")
  raw = {name: lm_eval.evaluate(lm, getattr(models, name), w, split, progress=evaluating(name))
         for name in ("target", "retain")}
  report = {"split": split, "world": world, "seed": seed, "backend": jax.default_backend(),
            "forget_authors": w.forget_count(split), "authors": len(w.authors),
            "model": {"d_model": lm.config.d_model, "n_layers": lm.config.n_layers,
                      "parameters": sum(x.size for x in jax.tree.leaves(models.target))},
            "training": models.stats, "methods": {}}
  for name in ("target", "retain"):
    report[name] = lm_eval.compare(raw[name], raw["retain"])
    report[name].update(models.stats[name])  # its fine-tuning: seconds and tokens/s

  if relearn:
    threshold = lm_eval.relearn_threshold(lm, models.target, w, split)
    report["relearn_threshold"] = threshold
    for name in ("target", "retain"):
      log(f"relearning attack on the {name} model")
      report[name]["relearn_steps"] = lm_eval.relearn_steps(lm, getattr(models, name), w, split, threshold=threshold)
  fq, rq = w.qa(w.forget_authors(split)), w.qa(w.retain_authors(split))
  forget = lm_data.qa_batch([q.question for q in fq], [q.answer for q in fq], length=models.length)
  retain = lm_data.qa_batch([q.question for q in rq], [q.answer for q in rq], length=models.length)
  context = {"idk": lm_data.idk_batch([q.question for q in fq], w.idk, seed=seed, length=models.length)}
  for name in methods:
    method = methods_lib.get(name, task="lm")
    overrides = {**size_hyper, **(hyper or {}).get(name, {})}
    log(f"{name}: {method.describe(**overrides)}")
    stats: dict = {}
    tick = None if progress is None else (lambda done, total, n=name: progress(n, done, total))
    t0 = time.perf_counter()
    needs = {k: context[k] for k in method.needs}
    params = method(lm, models.target, forget=forget, retain=retain, seed=seed, progress=tick, stats=stats,
                    **needs, **overrides)
    seconds = time.perf_counter() - t0
    row = lm_eval.compare(lm_eval.evaluate(lm, params, w, split, progress=evaluating(name)), raw["retain"])
    row.update(seconds=seconds, tokens_per_s=stats.get("tokens", 0) / seconds, description=method.describe(**overrides))
    if relearn:
      row["relearn_steps"] = lm_eval.relearn_steps(lm, params, w, split, threshold=threshold)
    report["methods"][name] = row
  return report
