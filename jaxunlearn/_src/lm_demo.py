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
import warnings
from collections.abc import Callable

import jax

from jaxunlearn._src import lm_data, lm_eval, lm_knowledge, lm_models, lm_train, lm_validation, lm_world
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
        relearn: bool = False, select: list[str] | None = None, log: Callable[[str], None] = lambda _: None,
        progress: Callable[[str, int, int], None] | None = None) -> dict:
  """Runs the benchmark; returns ``{"target": {...}, "retain": {...}, "methods": {NAME: {...}}}``
  (each with ``KEYS`` and the detailed numbers) plus the run's settings. ``hyper`` overrides a
  method's defaults (``{"gradient_ascent": {"epochs": 5}}``). ``relearn``: also run the relearning
  attack on every model (``relearn_steps``: fine-tuning steps on half the forget facts until the
  other half's ROUGE-L is back at 0.9x the target's; ``None``: not within 40 steps). ``select``:
  methods also run with checkpoint selection (rows ``NAME+select``): ``Validation(holdout_gap(forget,
  validation text), every=one epoch, select="best")``, the validation text being fictitious authors
  of another world (the same kind of text as the forget set, never trained on, and disjoint from the
  holdout authors the evaluation's membership attack uses). Knowledge unlearning's stopping rule
  uses the same validation text."""
  methods = methods_lib.names(task="lm") if methods is None else methods
  select = list(select or [])
  unknown = [m for m in select if m not in methods_lib.names(task="lm")]
  if unknown:
    raise ValueError(f"unknown method(s) to run with selection: {unknown}; known: {methods_lib.names(task='lm')}.")
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

  report["relearn_seconds"] = 0.0  # the attack's share of the run (not part of unlearning)
  if relearn:
    t_attack = time.perf_counter()
    threshold = lm_eval.relearn_threshold(lm, models.target, w, split)
    report["relearn_threshold"] = threshold
    for name in ("target", "retain"):
      log(f"relearning attack on the {name} model")
      report[name]["relearn_steps"] = lm_eval.relearn_steps(lm, getattr(models, name), w, split, threshold=threshold)
    report["relearn_seconds"] += time.perf_counter() - t_attack
  fq, rq = w.qa(w.forget_authors(split)), w.qa(w.retain_authors(split))
  forget = lm_data.qa_batch([q.question for q in fq], [q.answer for q in fq], length=models.length)
  retain = lm_data.qa_batch([q.question for q in rq], [q.answer for q in rq], length=models.length)
  # Validation text a user has at deletion time: authors of another world (never trained on, and
  # not the holdout authors of the membership attack), as many as the split forgets.
  other = lm_world.generate(lm_world.WorldConfig.preset(world, seed + 1_000_003))
  vq = other.holdout_qa(split)
  vquestions, vanswers = [q.question for q in vq], [q.answer for q in vq]
  validation = lm_data.qa_batch(vquestions, vanswers, length=lm_data.length_for(vquestions, vanswers))
  context = {"idk": lm_data.idk_batch([q.question for q in fq], w.idk, seed=seed, length=models.length),
             "holdout": validation}
  gap = lm_validation.holdout_gap(lm, forget, validation) if select else None
  for row_name, name in [(m, m) for m in methods] + [(f"{m}+select", m) for m in select]:
    method = methods_lib.get(name, task="lm")
    overrides = {**size_hyper, **(hyper or {}).get(name, {})}
    extra = {}
    if row_name != name:  # checked once per epoch; the best check's parameters are kept
      per_epoch = -(-len(forget["input_ids"]) // overrides.get("batch_size", method.defaults.get("batch_size", 32)))
      extra["validation"] = lm_validation.Validation(gap, every=per_epoch, select="best")
    log(f"{row_name}: {method.describe(**overrides)}")
    stats: dict = {}
    tick = None if progress is None else (lambda done, total, n=row_name: progress(n, done, total))
    t0 = time.perf_counter()
    needs = {k: context[k] for k in method.needs}
    with warnings.catch_warnings(record=True) as caught:  # a stopping rule that did not hold is reported, not raised
      warnings.simplefilter("always", lm_knowledge.StoppingRuleWarning)
      params = method(lm, models.target, forget=forget, retain=retain, seed=seed, progress=tick, stats=stats,
                      **needs, **overrides, **extra)
    seconds = time.perf_counter() - t0
    for warning in caught:
      if not issubclass(warning.category, lm_knowledge.StoppingRuleWarning):
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
      log(f"{row_name}: {warning.message}")
    t_eval = time.perf_counter()
    row = lm_eval.compare(lm_eval.evaluate(lm, params, w, split, progress=evaluating(name)), raw["retain"])
    row.update(seconds=seconds, tokens_per_s=stats.get("tokens", 0) / seconds, description=method.describe(**overrides),
               steps=stats.get("steps"), evaluation_seconds=time.perf_counter() - t_eval)
    for key in ("stopped_at", "selected_step"):
      if key in stats:
        row[key] = stats[key]
    if relearn:
      t_attack = time.perf_counter()
      row["relearn_steps"] = lm_eval.relearn_steps(lm, params, w, split, threshold=threshold)
      report["relearn_seconds"] += time.perf_counter() - t_attack
    report["methods"][row_name] = row
  return report
