"""``jaxunlearn sisa ...``: the SISA job on the command line's reference datasets and models."""

from __future__ import annotations

import sys
import warnings

import jax
import numpy as np
import optax

from jaxunlearn._src.reports import progress_bar
from jaxunlearn._src import data as data_lib
from jaxunlearn._src import id_text, loaders
from jaxunlearn._src import losses, models, sisa


def _open(directory: str, config: sisa.SisaConfig | None = None, data_dir: str | None = None):
  """Builds the SISA job from ``config`` (train) or from the directory's stored config."""
  if config is None:
    stored = sisa.read_config(directory)
    if stored is None:
      raise FileNotFoundError(f"{directory} is not a SISA directory (no config.json); run `jaxunlearn sisa train` first.")
    config = sisa.SisaConfig(**stored["sisa"])
    data_dir = stored["data_dir"]
  if config.dataset is None or config.model is None or config.learning_rate is None:
    raise ValueError(f"{directory} was created from Python with custom functions; open it with jaxunlearn.sisa.SISA.")
  train, test = loaders.load(config.dataset, data_dir=data_dir)
  apply, _ = models.create(config.model, train.input_shape, train.num_classes, key=jax.random.key(0))
  init = models.init_fn(config.model, train.input_shape, train.num_classes)
  job = sisa.SISA(directory, train, init_fn=init, apply_fn=apply, loss_fn=losses.cross_entropy_loss(apply),
                  optimizer=_adam(config.learning_rate), config=config, data_dir=data_dir)
  return job, test


_OPTIMIZERS: dict[float, optax.GradientTransformation] = {}


def _adam(lr: float) -> optax.GradientTransformation:
  return _OPTIMIZERS.setdefault(lr, optax.adam(lr))


def run(args) -> int:
  """Runs one ``jaxunlearn sisa`` operation; warnings about the directory go to stderr.

  Exit codes: 0 success, 1 verification failed, 2 error (nothing changed), 3 committed but cleanup
  pending (the next command finishes it)."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", sisa.SisaWarning)
    code = _run(args)
  for w in caught:
    if issubclass(w.category, sisa.SisaWarning):
      print(f"jaxunlearn sisa {args.op}: warning: {w.message}", file=sys.stderr)
    else:
      warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
  return code


def _run(args) -> int:
  from rich.console import Console

  console = Console(stderr=False)
  if args.op == "train":
    config = sisa.SisaConfig(shards=args.shards, slices=args.slices, epochs=args.epochs, batch_size=args.batch_size,
                             seed=args.seed, strategy=args.strategy, dataset=args.dataset, model=args.model,
                             learning_rate=args.lr)
    config.validate()
    exclude = id_text.read_ids_file(args.exclude_ids) if args.exclude_ids else None
    job, _ = _open(args.dir, config, args.data_dir)
    with progress_bar(console, "training shards") as bar:
      summary = job.train(exclude_ids=exclude, progress=bar, wait=args.wait)
    console.print(f"trained {config.shards} shards x {config.slices} slices ({job.strategy}): "
                  f"{summary['steps']} steps in {summary['seconds']:.1f} s -> {args.dir}")
    return 3 if summary["cleanup_pending"] else 0
  job, test = _open(args.dir)
  if args.op == "forget":
    ids = id_text.cli_ids(args.ids, args.ids_file)
    with progress_bar(console, "retraining") as bar:
      record = job.forget(ids, progress=bar, wait=args.wait)
    if record["noop"]:
      console.print(f"nothing to do: id(s) {', '.join(map(str, record['already_forgotten']))} already forgotten.")
      return 0
    if record["already_forgotten"]:
      console.print(f"already forgotten (skipped): {', '.join(map(str, record['already_forgotten']))}")
    retrained = ", ".join(f"shard {k} from slice {v}" for k, v in record["retrained"].items())
    console.print(f"forgot {len(record['ids'])} id(s): retrained {retrained}; {record['steps']} steps in "
                  f"{record['seconds']:.2f} s (request #{record['seq']} in the ledger)")
    if record["remaining"] == 0:
      console.print("no training example remains: the ensemble holds no model any more.")
    return 3 if record["cleanup_pending"] else 0
  if args.op == "repair":
    with progress_bar(console, "repairing") as bar:
      out = job.repair(progress=bar, wait=args.wait)
    redone = ", ".join(f"shard {k} from stage {v}" for k, v in out["retrained"].items()) or "nothing"
    console.print(f"repaired {args.dir}: {out['forgotten']} id(s) forgotten (every ledger id included); "
                  f"{out['reused']} checkpoint(s) intact and reused; retrained {redone}: {out['steps']} steps in "
                  f"{out['seconds']:.1f} s")
    return 3 if out["cleanup_pending"] else 0
  if args.op == "digest":
    for k, d in enumerate(job.digests()):
      print(f"{k} {d}")
    return 0
  if args.op == "verify":
    with progress_bar(console, "retraining from scratch") as bar:
      result = job.verify(progress=bar)
    for k, ok in result["shards"].items():
      console.print(f"shard {k}: {'bit-identical to retraining from scratch' if ok else 'MISMATCH'}")
    for problem in result["problems"]:
      console.print(f"problem: {problem}")
    console.print("verified (every live checkpoint read back intact)" if result["ok"] else "verification FAILED")
    return 0 if result["ok"] else 1
  if args.op == "status":
    return _status(console, job, test)
  raise ValueError(f"unknown sisa operation {args.op!r}")


def _status(console, job: sisa.SISA, test: data_lib.Dataset) -> int:
  from rich.table import Table

  st = job.status()
  c = st["config"]
  console.print(f"SISA {job.directory}: {c['dataset']} / {c['model']}, {c['shards']} shards x {c['slices']} slices, "
                f"{c['epochs']} epochs ({job.config.stage_epochs} per stage), batch {c['batch_size']}, "
                f"strategy {st['strategy']}")
  console.print(f"{st['examples']} examples in the plan, {st['forgotten']} forgotten; training took "
                f"{st['train_steps']} steps in {st['train_seconds']:.1f} s")
  plan = Table(title="examples per shard and slice (forgotten ones excluded)")
  plan.add_column("shard")
  for r in range(c["slices"]):
    plan.add_column(f"slice {r}", justify="right")
  for k, sizes in enumerate(st["sizes"]):
    plan.add_row(str(k), *map(str, sizes))
  console.print(plan)
  ledger = Table(title="ledger")
  for col in ("#", "time", "ids", "retrained (shard: first slice)", "steps", "seconds"):
    ledger.add_column(col)
  for r in st["requests"]:
    ids = ", ".join(map(str, r["ids"][:8])) + (" ..." if len(r["ids"]) > 8 else "")
    ledger.add_row(str(r["seq"]), r["time"], ids, ", ".join(f"{k}: {v}" for k, v in r["retrained"].items()),
                   str(r["steps"]), f"{r['seconds']:.2f}")
  console.print(ledger)
  for r in st["repairs"]:
    console.print(f"repair at {r['time']} (manifest {r['manifest_was']}): retrained "
                  f"{', '.join(f'shard {k} from stage {v}' for k, v in r['retrained'].items()) or 'nothing'}")
  empty = sorted(set(range(c["shards"])) - set(st["live_shards"]))
  if empty:
    console.print(f"shard(s) {', '.join(map(str, empty))}: every example forgotten, no model; left out of aggregation")
  for path in st["not_ours"]:
    console.print(f"not written by jaxunlearn, left alone: {path} (it may hold copies of training data)")
  if not st["live_shards"]:
    console.print(f"every one of the {st['examples']} training examples has been forgotten: no model remains.")
    return 0
  logits = job.logits(test.x)
  vote = float(np.mean(sisa.aggregate(logits, "vote") == test.y))
  soft = float(np.mean(sisa.aggregate(logits, "softmax") == test.y))
  each = np.mean(logits.argmax(-1) == test.y[None], axis=1)
  console.print(f"test accuracy: majority vote {vote:.3f}, mean softmax {soft:.3f}; single shard models "
                f"{each.min():.3f}..{each.max():.3f} (mean {each.mean():.3f})")
  return 0
