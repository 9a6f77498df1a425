"""Training a language model on batches, and the benchmark's model pipeline cached on disk.

Pipeline (TOFU's): pretrain on the world knowledge -> fine-tune on every author (the **target**,
the model to unlearn) and, per split, on the retain authors only (the **retain** model, the gold
standard); both fine-tunings replay the world knowledge, so that the two models differ only in the
forget authors. Every stage trains on each fact in two wordings (the answer and its paraphrase). Each stage is an orbax checkpoint under ``cache_dir`` keyed by a digest of everything
that shapes it (world, model sizes, training settings, the stage it starts from), so it is
trained once and reused; a damaged or foreign entry is retrained, never trusted.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn._src import lm_data, lm_losses, lm_models, lm_world

Progress = Callable[[str, int, int], None]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How the benchmark's models are trained (AdamW, linear warm-up then cosine decay)."""

  pretrain_epochs: int = 20
  finetune_epochs: int = 5
  batch_size: int = 32
  learning_rate: float = 3e-3
  weight_decay: float = 0.01
  seed: int = 0


@functools.lru_cache(maxsize=16)
def _train_step(logits_fn, optimizer):
  loss_fn = lm_losses.nll_loss(logits_fn)

  @jax.jit
  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def adamw(learning_rate: float, weight_decay: float, steps: int) -> optax.GradientTransformation:
  warmup = max(1, steps // 10)
  schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, max(steps, warmup + 1),
                                                end_value=learning_rate * 0.05)
  return optax.adamw(schedule, weight_decay=weight_decay)


def fit(logits_fn, params, batch: lm_data.Batch, *, epochs: int, batch_size: int, learning_rate: float,
        weight_decay: float = 0.01, seed: int = 0, progress: Callable[[int, int], None] | None = None):
  """Next-token NLL training on ``batch`` (the scored labels only): returns ``(params, tokens per
  second)``. ``progress(epoch, epochs)`` after every epoch."""
  n = len(batch["input_ids"])
  steps = epochs * -(-n // batch_size)
  optimizer = adamw(learning_rate, weight_decay, steps)
  step = _train_step(logits_fn, optimizer)
  opt_state = optimizer.init(params)
  tokens, t0 = 0, time.perf_counter()
  for epoch in range(epochs):
    for mb in lm_data.epoch_batches(batch, batch_size=batch_size, seed=seed, epoch=epoch):
      params, opt_state, _ = step(params, opt_state, {k: jnp.asarray(v) for k, v in mb.items()})
      tokens += int(mb["attention_mask"].sum())
    jax.block_until_ready(params)
    if progress is not None:
      progress(epoch + 1, epochs)
  return params, tokens / max(time.perf_counter() - t0, 1e-9)


# -- the cached pipeline ---------------------------------------------------------------------------
@dataclasses.dataclass
class Models:
  """The benchmark's models: ``lm`` (functions), ``pretrained``, ``target`` and ``retain`` params
  (``retain`` for ``split``), the world they were trained on, and per stage the ``seconds`` and
  ``tokens_per_s`` of its training (as measured when it was trained, also when reused)."""

  lm: lm_models.LM
  world: lm_world.World
  split: str
  pretrained: Any
  target: Any
  retain: Any
  length: int
  stats: dict[str, dict]


def sequence_length(world: lm_world.World) -> int:
  """The padded length of the training batches (questions and answers of every author and of the
  world knowledge)."""
  qa = [q for a in world.authors + world.holdout for q in a] + world.pretraining
  return lm_data.length_for([q.question for q in qa] * 2, [q.answer for q in qa] + [q.paraphrased_answer for q in qa])


def _digest(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _restore(path: str, template):
  import orbax.checkpoint as ocp

  try:
    with open(os.path.join(path, "jaxunlearn.json")) as f:
      meta = json.load(f)
    restored = ocp.StandardCheckpointer().restore(os.path.join(path, "params"), template)
  except Exception:  # damaged, partial or foreign: retrain it
    return None
  ok = all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored))
  return (restored, meta) if ok else None


def _save(path: str, params, meta: dict) -> None:
  import orbax.checkpoint as ocp

  tmp = f"{path}.tmp{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(os.path.join(tmp, "params"), params)
  ckpt.wait_until_finished()
  with open(os.path.join(tmp, "jaxunlearn.json"), "w") as f:
    json.dump(meta, f)
  shutil.rmtree(path, ignore_errors=True)
  os.replace(tmp, path)


def _stage(cache_dir: str | None, name: str, key: dict, template, train: Callable[[], Any], log) -> tuple[Any, dict]:
  """``train() -> (params, tokens/s)``, or the cached params for the same ``key``; returns
  ``(params, {"seconds", "tokens_per_s"})`` as measured when the stage was trained."""
  path = None if cache_dir is None else os.path.join(cache_dir, f"{name}-{_digest(key)}")
  if path is not None and os.path.isdir(path):
    found = _restore(path, template)
    if found is not None:
      log(f"{name}: reusing {path}")
      return found[0], {k: found[1].get(k) for k in ("seconds", "tokens_per_s")}
    log(f"{name}: {path} is damaged; training again")
  t0 = time.perf_counter()
  params, tokens_per_s = train()
  params = jax.block_until_ready(params)
  stats = {"seconds": time.perf_counter() - t0, "tokens_per_s": tokens_per_s}
  if path is not None:
    os.makedirs(cache_dir, exist_ok=True)
    _save(path, params, {"stage": name, "key": key, **stats})
  return params, stats


def build(world: lm_world.World, *, split: str = "forget10", model: lm_models.DecoderConfig | None = None,
          train: TrainConfig | None = None, cache_dir: str | None = None, progress: Progress | None = None,
          log: Callable[[str], None] = lambda _: None) -> Models:
  """Pretrains, fine-tunes the target and the split's retain model (or reuses them from
  ``cache_dir``). ``progress(stage, epoch, epochs)`` during training."""
  model = model or lm_models.DecoderConfig()
  train = train or TrainConfig()
  lm = lm_models.create(model, seed=train.seed)
  length = sequence_length(world)
  base_key = {"world": dataclasses.asdict(world.config), "model": dataclasses.asdict(model),
              "train": dataclasses.asdict(train), "length": length, "prompt": lm_data.prompt("{q}"), "format": 1}

  def run(stage: str, params, qa: list[lm_world.QA], epochs: int):
    # Every fact in two wordings (the answer and its paraphrase): a small model then knows the
    # fact, not one sentence, as TOFU's LLMs do by generalising (its truth ratio scores the
    # paraphrase against perturbed answers in the paraphrase's wording).
    batch = lm_data.qa_batch([q.question for q in qa] * 2, [q.answer for q in qa] + [q.paraphrased_answer for q in qa],
                             length=length)
    tick = None if progress is None else (lambda e, n: progress(stage, e, n))
    return fit(lm.logits_fn, params, batch, epochs=epochs, batch_size=train.batch_size,
               learning_rate=train.learning_rate, weight_decay=train.weight_decay, seed=train.seed, progress=tick)

  stats = {}
  log(f"pretraining on {len(world.pretraining)} world-knowledge QA")
  pre, stats["pretrain"] = _stage(cache_dir, "pretrain", base_key, lm.params,
                                    lambda: run("pretrain", lm.params, world.pretraining, train.pretrain_epochs), log)
  # Fine-tuning replays the world knowledge (both models alike) so that it survives: utility is
  # measured on it, as TOFU measures it on knowledge its base models keep.
  everyone = world.qa(list(range(len(world.authors)))) + world.pretraining
  log(f"fine-tuning the target model on {len(everyone)} QA ({len(world.authors)} authors and the world knowledge)")
  target, stats["target"] = _stage(cache_dir, "target", {**base_key, "stage": "target"}, lm.params,
                                     lambda: run("target", pre, everyone, train.finetune_epochs), log)
  kept = world.qa(world.retain_authors(split)) + world.pretraining
  log(f"fine-tuning the retain model on {len(kept)} QA ({split}'s authors left out)")
  retain, stats["retain"] = _stage(cache_dir, f"retain-{split}", {**base_key, "stage": "retain", "split": split},
                                     lm.params, lambda: run("retain", pre, kept, train.finetune_epochs), log)
  return Models(lm, world, split, pre, target, retain, length, stats)
