"""The job behind ``jaxunlearn demo --corrupt KIND:FRACTION``: poison the training set, train on
it, detect the harmful examples, unlearn the flagged ones with the registry's methods (and SISA),
and compare with the model retrained on the clean data."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn._src import corrective, loaders, losses, metrics, models, selection, training
from jaxunlearn._src import methods as methods_lib
from jaxunlearn._src.demo import _timed

DETECTORS = ("iforest/inputs", "lof/inputs", "iforest/model", "lof/model")


def parse_corrupt(spec: str) -> tuple[str, float, int]:
  """``backdoor:FRACTION[:TARGET]`` or ``labelflip:FRACTION`` -> ``(kind, fraction, target)``."""
  parts = spec.split(":")
  kind = parts[0]
  if kind not in ("backdoor", "labelflip") or len(parts) < 2 or len(parts) > (3 if kind == "backdoor" else 2):
    raise ValueError(f"--corrupt takes backdoor:FRACTION[:TARGET] or labelflip:FRACTION, got {spec!r}.")
  try:
    fraction = float(parts[1])
    target = int(parts[2]) if len(parts) == 3 else 0
  except ValueError:
    raise ValueError(f"--corrupt {spec!r}: the fraction must be a number and the target class an integer.") from None
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"--corrupt {spec!r}: the fraction must lie strictly between 0 and 1.")
  return kind, fraction, target


def penultimate(apply_fn: Callable, params: dict, x: np.ndarray, *, head: str = "head") -> np.ndarray:
  """A model's features: the inputs of its last linear layer ``params[head]`` (``kernel [d, C]``,
  ``bias [C]``, applied as ``h @ kernel + bias``), computed by running the same network with that
  layer replaced by the identity. Fits the reference models and any Flax model whose output layer
  is an ``nnx.Linear`` under the name ``head``.

  Returns:
    ``[n, d]`` float32 features (what a certified head or an outlier detector is fitted on).

  Example:
    >>> import jax, numpy as np
    >>> from jaxunlearn import corrective, models
    >>> apply, params = models.create("mlp", (8, 8, 1), 10, key=jax.random.key(0))
    >>> corrective.penultimate(apply, params, np.zeros((3, 8, 8, 1), np.float32)).shape
    (3, 256)
  """
  layer = params[head]
  width = layer["kernel"].shape[0]
  identity = {**params, head: {"kernel": jnp.eye(width, dtype=layer["kernel"].dtype),
                               "bias": jnp.zeros(width, layer["bias"].dtype)}}
  return training.predict(apply_fn, identity, x)


@dataclasses.dataclass
class Job:
  """The prepared job: corrupted data, the poisoned model, its detections and the flagged split."""

  kind: str
  fraction: float
  target: int
  clean: object
  train: object
  test: object
  bad_ids: np.ndarray
  apply: Callable
  init: Callable
  loss: Callable
  poisoned: object
  fit: Callable
  detection: dict
  flagged: np.ndarray
  forget: object
  retain: object
  seed: int = 0

  def evaluate(self, params, test=None, labels_fn: Callable | None = None) -> dict:
    """Clean test accuracy and, for a backdoor, attack success (triggered test inputs of the other
    classes classified as the target); for label flips, how many corrupted training examples keep
    their corrupted label and how many get their true one. ``test``: another test split;
    ``labels_fn(x) -> labels`` replaces the model ``params`` (an ensemble's vote)."""
    test = self.test if test is None else test
    if labels_fn is None:
      labels_fn = lambda x: np.argmax(training.predict(self.apply, params, x), 1)  # noqa: E731
    row = {"test_acc": float(np.mean(labels_fn(test.x) == test.y))}
    if self.kind == "backdoor":
      keep = test.y != self.target
      row["attack_success"] = float(np.mean(labels_fn(selection.add_trigger(test.x[keep])) == self.target))
    else:
      pos = self.train.positions(self.bad_ids)
      pred = labels_fn(self.train.x[pos])
      row["corrupt_label_agreement"] = float(np.mean(pred == self.train.y[pos]))
      row["true_label_acc"] = float(np.mean(pred == self.clean.y[pos]))
    return row

  def unlearn(self, name: str, **overrides):
    """The poisoned model after the registry method ``name`` forgot the flagged ids."""
    method = methods_lib.get(name)
    context = {"init_fn": self.init, "apply_fn": self.apply, "holdout": self.test}
    return method(self.loss, self.poisoned, forget=self.forget, retain=self.retain, seed=self.seed,
                  **{k: context[k] for k in method.needs}, **overrides)


def prepare(*, corrupt: str = "backdoor:0.05", dataset: str = "digits", model: str = "mlp", seed: int = 0,
            epochs: int = 20, batch_size: int = 128, detector: str = "iforest/inputs", data_dir: str | None = None,
            log: Callable[[str], None] = lambda _: None) -> Job:
  """Corrupts the training set, trains on it, runs every detector, splits off the flagged ids."""
  kind, fraction, target = parse_corrupt(corrupt)
  if detector not in DETECTORS:
    raise ValueError(f"unknown detector {detector!r}; known: {', '.join(DETECTORS)}.")
  clean, test = loaders.load(dataset, data_dir=data_dir)
  if kind == "backdoor":
    if not 0 <= target < clean.num_classes:
      raise ValueError(f"--corrupt {corrupt!r}: target class {target} out of range 0..{clean.num_classes - 1}.")
    train, bad_ids = selection.stamp_trigger(clean, fraction, seed=seed, target_label=target)
  else:
    train, bad_ids = selection.flip_labels(clean, fraction, seed=seed)
  apply, init_params = models.create(model, train.input_shape, train.num_classes, key=jax.random.key(seed))
  init = models.init_fn(model, train.input_shape, train.num_classes)
  loss = losses.cross_entropy_loss(apply)
  optimizer = optax.adam(1e-3)

  def fit(ds):
    return training.fit(loss, init_params, ds, optimizer=optimizer, epochs=epochs, batch_size=batch_size, seed=seed)

  log(f"training on the corrupted data ({len(bad_ids)} of {len(train)} examples {kind}ed, {epochs} epochs)")
  poisoned = fit(train)
  features = {"inputs": train.x.reshape(len(train), -1), "model": penultimate(apply, poisoned, train.x)}
  model_loss = np.asarray(metrics.per_example_loss(training.predict(apply, poisoned, train.x), train.y))
  detection = {}
  for name in DETECTORS:
    det, on = name.split("/")
    t0 = time.perf_counter()
    found = corrective.detect(features[on], train.y, train.ids, method=det, seed=seed,
                              loss=model_loss if on == "model" else None)
    precision, recall = found.precision_recall(bad_ids)
    detection[name] = {"flagged": int(len(found.ids)), "precision": precision, "recall": recall,
                       "seconds": time.perf_counter() - t0, "ids": found.ids.tolist()}
  flagged = np.sort(np.asarray(detection[detector]["ids"], np.int64))
  if len(flagged) == 0:
    raise ValueError(f"the detector {detector} flagged nothing; nothing to unlearn.")
  if len(flagged) == len(train):
    raise ValueError(f"the detector {detector} flagged every example; nothing would be retained.")
  log(f"{detector} flagged {len(flagged)} examples (precision {detection[detector]['precision']:.2f}, "
      f"recall {detection[detector]['recall']:.2f})")
  forget, retain = selection.split_forget(train, flagged)
  return Job(kind=kind, fraction=fraction, target=target, clean=clean, train=train, test=test, bad_ids=bad_ids, apply=apply, init=init,
             loss=loss, poisoned=poisoned, fit=fit, detection=detection, flagged=flagged, forget=forget,
             retain=retain, seed=seed)


def run(
    *,
    corrupt: str = "backdoor:0.05",
    dataset: str = "digits",
    methods: list[str] | None = None,
    model: str = "mlp",
    seed: int = 0,
    epochs: int = 20,
    batch_size: int = 128,
    detector: str = "iforest/inputs",
    sisa_shards: int = 0,
    data_dir: str | None = None,
    log: Callable[[str], None] = lambda _: None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
  """Runs the corrective-unlearning job and returns a JSON-ready report.

  ``detector`` (``DETECT/FEATURES``: ``iforest`` or ``lof`` on the ``inputs`` or on the poisoned
  ``model``'s penultimate features and per-example loss) chooses whose flagged ids are unlearned;
  every detector's precision and recall is reported. ``sisa_shards > 0`` also trains a SISA
  ensemble of that many shards on the corrupted data and forgets the flagged ids exactly.
  References: the poisoned model, the clean retrain (without every corrupted example: the target)
  and the retrain without the flagged ids (exact unlearning of what was detected).
  """
  methods = methods_lib.names() if methods is None else methods
  stages = 3 + len(methods) + (sisa_shards > 0)
  tick = (lambda s, d: None) if progress is None else (lambda s, d: progress(s, d, stages))
  job = prepare(corrupt=corrupt, dataset=dataset, model=model, seed=seed, epochs=epochs, batch_size=batch_size,
                detector=detector, data_dir=data_dir, log=log)
  report = {"dataset": dataset, "model": model, "corrupt": corrupt, "kind": job.kind, "fraction": job.fraction,
            "target": job.target if job.kind == "backdoor" else None, "corrupted": int(len(job.bad_ids)), "seed": seed,
            "train_size": int(len(job.train)), "test_size": int(len(job.test)), "backend": jax.default_backend(),
            "detector": detector, "flagged": int(len(job.flagged)), "detection": job.detection, "references": {},
            "methods": {}}

  def timed_row(fn):
    params, first, steady = _timed(fn)
    return {**job.evaluate(params), "seconds": steady, "compile_seconds": max(first - steady, 0.0)}

  report["references"]["poisoned"] = {**job.evaluate(job.poisoned), "seconds": None, "compile_seconds": None}
  tick("poisoned", 1)
  log(f"retraining without the {len(job.bad_ids)} corrupted examples (the clean retrain: the target)")
  report["references"]["clean_retrain"] = timed_row(lambda: job.fit(selection.split_forget(job.train,
                                                                                           job.bad_ids)[1]))
  tick("clean retrain", 2)
  log(f"retraining without the {len(job.flagged)} flagged examples (exact unlearning of the detected)")
  report["references"]["retrain_flagged"] = timed_row(lambda: job.fit(job.retain))
  tick("retrain without the flagged", 3)
  for done, name in enumerate(methods, start=4):
    log(f"{name}: {methods_lib.get(name).describe()}")
    report["methods"][name] = timed_row(lambda: job.unlearn(name))
    tick(name, done)
  if sisa_shards:
    report["references"][f"sisa_{sisa_shards}"] = _sisa(job, sisa_shards, epochs, batch_size, seed, log)
    tick("sisa", stages)
  return report


def _sisa(job: Job, shards: int, epochs: int, batch_size: int, seed: int, log) -> dict:
  from jaxunlearn._src import sisa

  log(f"SISA: {shards} shards trained on the corrupted data, then the flagged ids forgotten exactly")
  with tempfile.TemporaryDirectory() as d:
    ensemble = sisa.SISA(d, job.train, init_fn=job.init, apply_fn=job.apply, loss_fn=job.loss,
                         optimizer=optax.adam(1e-3),
                         config=sisa.SisaConfig(shards=shards, slices=4, epochs=epochs, batch_size=batch_size,
                                                seed=seed))
    ensemble.train()
    t0 = time.perf_counter()
    ensemble.forget(job.flagged.tolist())
    seconds = time.perf_counter() - t0
    row = job.evaluate(None, labels_fn=lambda x: sisa.aggregate(ensemble.logits(x), "vote"))
    return {**row, "seconds": seconds, "compile_seconds": 0.0}
